// Uploading training data and creating a job: forms that send what the API takes and
// show what it answers, its errors included (the field it names is marked).

import { ApiError, getJson, JOBS, postJson, uploadFile } from "./api.js";
import { bytes, errorView, fill, h, statusBadge, when } from "./dom.js";
import { showPreview } from "./preview.js";

/** A number field's value as the API takes it: left out when empty, "auto" as is, a
 * number when it reads as one; anything else is sent as typed, for the API to say what
 * it must be. */
function entered(text) {
  const value = text.trim();
  if (value === "") return undefined;
  if (value === "auto") return value;
  const number = Number(value);
  return Number.isNaN(number) ? value : number;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** `extra`'s fields over `base`'s, objects merged at every depth. */
function merged(base, extra) {
  const result = { ...base };
  for (const [name, value] of Object.entries(extra)) {
    result[name] = isObject(value) && isObject(result[name]) ? merged(result[name], value) : value;
  }
  return result;
}

function withoutUndefined(object) {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined));
}

// The code of the form's own error about its JSON field (the API never saw the request).
const EXTRA_REFUSED = "invalid_extra_json";

/** The request body of `POST /v1/fine_tuning/jobs` the form describes. */
function jobRequest(form) {
  const type = form.elements.method.value;
  const hyperparameters = withoutUndefined({ n_epochs: entered(form.elements.n_epochs.value) });
  const training = withoutUndefined({
    learning_rate: entered(form.elements.learning_rate.value),
    max_steps: entered(form.elements.max_steps.value),
  });
  const body = withoutUndefined({
    model: form.elements.model.value,
    training_file: form.elements.training_file.value,
    validation_file: form.elements.validation_file.value || undefined,
    suffix: form.elements.suffix.value.trim() || undefined,
    method: { type, [type]: { hyperparameters } },
    qlora: Object.keys(training).length ? { training } : undefined,
  });
  const extra = form.elements.extra.value.trim();
  if (!extra) return body;
  let parsed;
  try {
    parsed = JSON.parse(extra);
  } catch (error) {
    throw new ApiError(0, { message: `More of the request: not valid JSON (${error.message})`, code: EXTRA_REFUSED });
  }
  if (!isObject(parsed)) throw new ApiError(0, { message: "More of the request: must be a JSON object", code: EXTRA_REFUSED });
  return merged(body, parsed);
}

function options(select, items, keep, first = []) {
  const chosen = keep ?? select.value;
  fill(select, first, items.map(([value, label]) => h("option", { value, selected: value === chosen }, label)));
}

export class NewPage {
  /** `template`: the page's <template id="new-view">; `created(job)` after a job is created. */
  constructor(template, created) {
    this.element = h("div", { id: "new-page" }, template.content.cloneNode(true));
    this.created = created;
    const $ = (selector) => this.element.querySelector(selector);
    this.uploadForm = $("#upload-form");
    this.jobForm = $("#job-form");
    this.progress = $("#upload-progress");
    this.uploadResult = $("#upload-result");
    this.jobResult = $("#job-form-result");
    this.preview = $("#job-form-preview");
    this.filesBody = $("#files-table tbody");
    this.filesError = $("#files-error");
    this.uploadForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.upload();
    });
    this.jobForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.createJob();
    });
    $("#preview-button").addEventListener("click", () => this.showPreview());
    this.loadModels();
    this.loadFiles();
  }

  stop() {}

  async loadModels() {
    try {
      const page = await getJson("v1/models");
      options(this.jobForm.elements.model, page.data.map((model) => [model.id, model.id]));
    } catch (error) {
      fill(this.jobResult, errorView(error));
    }
  }

  /** The files table and the file choices of the job form; `chosen` becomes the
   * training file (a file just uploaded). */
  async loadFiles(chosen) {
    let page;
    try {
      page = await getJson("v1/files", { purpose: "fine-tune", limit: 100 });
    } catch (error) {
      fill(this.filesError, errorView(error));
      return;
    }
    fill(this.filesError);
    fill(
      this.filesBody,
      page.data.map((file) =>
        h(
          "tr",
          { dataset: { fileId: file.id } },
          h("td", { class: "mono small" }, file.id),
          h("td", {}, file.filename),
          h("td", {}, file.format ?? ""),
          h("td", { class: "num" }, file.examples),
          h("td", { class: "num" }, bytes(file.bytes)),
          h("td", { title: file.status_details ?? "" }, statusBadge(file.status)),
          h("td", { class: "small muted" }, when(file.created_at)),
        ),
      ),
    );
    const usable = page.data.filter((file) => file.status === "processed").map((file) => [file.id, `${file.filename} (${file.id})`]);
    options(this.jobForm.elements.training_file, usable, chosen);
    options(this.jobForm.elements.validation_file, usable, undefined, [h("option", { value: "" }, "none")]);
  }

  async upload() {
    const form = this.uploadForm;
    const file = form.elements.file.files[0];
    const button = form.querySelector("button[type=submit]");
    if (!file) return;
    button.disabled = true;
    this.progress.hidden = false;
    this.progress.value = 0;
    fill(this.uploadResult);
    try {
      const uploaded = await uploadFile(file, form.elements.format.value, (share) => (this.progress.value = share));
      fill(
        this.uploadResult,
        h(
          "div",
          { class: "notice", dataset: { fileId: uploaded.id } },
          `Uploaded ${uploaded.filename} as `,
          h("code", {}, uploaded.id),
          `: ${uploaded.examples} examples, format ${uploaded.format} (${uploaded.file_type}).`,
        ),
      );
      form.reset();
      await this.loadFiles(uploaded.id);
    } catch (error) {
      fill(this.uploadResult, errorView(error));
      if (error.code === "invalid_file") await this.loadFiles(); // kept, with its problems
    } finally {
      button.disabled = false;
      this.progress.hidden = true;
    }
  }

  /** Mark the field an error is about: the one the API named, or the JSON field. */
  markField(error) {
    for (const field of this.jobForm.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
    const param = error?.param;
    const field =
      error?.code === EXTRA_REFUSED
        ? this.jobForm.elements.extra
        : param && this.jobForm.querySelector(`[data-param="${CSS.escape(param)}"]`);
    if (field) {
      field.setAttribute("aria-invalid", "true");
      field.focus();
    }
  }

  async createJob() {
    const form = this.jobForm;
    const button = form.querySelector("button[type=submit]");
    form.elements.n_epochs.dataset.param = `method.${form.elements.method.value}.hyperparameters.n_epochs`;
    fill(this.jobResult);
    button.disabled = true;
    try {
      const job = await postJson(JOBS, jobRequest(form));
      this.markField(null);
      this.created(job);
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      fill(this.jobResult, errorView(error));
      this.markField(error);
    } finally {
      button.disabled = false;
    }
  }

  showPreview() {
    const { model, training_file: file } = this.jobForm.elements;
    if (!model.value || !file.value) {
      fill(this.preview, h("p", { class: "muted" }, "Choose a base model and a training file first."));
      return;
    }
    showPreview(this.preview, file.value, model.value);
  }
}
