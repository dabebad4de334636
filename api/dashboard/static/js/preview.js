// What training sees of a file: its first examples rendered through the base model's
// chat template (GET /v1/files/{id}/preview), the tokens the loss is computed on marked.

import { getJson } from "./api.js";
import { errorView, fill, h } from "./dom.js";

export const PREVIEW_EXAMPLES = 3;

function exampleView(example, index) {
  const notes = [`${example.tokens} tokens`, `${example.trained_tokens} trained`];
  if (example.truncated) notes.push("truncated to the maximum sequence length");
  return h(
    "div",
    { class: "example" },
    h("div", { class: "muted small" }, `Example ${index + 1}: ${notes.join(", ")}`),
    h(
      "pre",
      {},
      example.segments.map((segment) =>
        h(segment.trained ? "mark" : "span", { class: segment.trained ? null : "untrained", title: `${segment.tokens} tokens` }, segment.text),
      ),
    ),
  );
}

export function previewView(preview) {
  const template = preview.chat_template === "model" ? "the model's own chat template" : "the service's default (ChatML)";
  return h(
    "div",
    { class: "preview" },
    h(
      "p",
      { class: "muted small" },
      `${preview.file_id} (${preview.format ?? "unknown format"}) through ${preview.model}: ${template}; `,
      preview.eos_appended ? "EOS appended to trained turns. " : "",
      h("mark", {}, "Highlighted"),
      " text is trained on (counts in the loss); the rest is context.",
    ),
    preview.notes.length ? h("ul", { class: "small" }, preview.notes.map((note) => h("li", {}, note))) : null,
    preview.data.map(exampleView),
  );
}

/** Show the preview of `fileId` under `model` in `slot` (a pre-flight worker renders it:
 * it can take a moment). */
export async function showPreview(slot, fileId, model) {
  fill(slot, h("p", { class: "muted" }, "Rendering the first examples…"));
  try {
    fill(slot, previewView(await getJson(`v1/files/${encodeURIComponent(fileId)}/preview`, { model, n: PREVIEW_EXAMPLES })));
  } catch (error) {
    fill(slot, errorView(error));
  }
}
