// One job's page, refreshed while the job is active: status and progress, the loss /
// learning-rate / speed curves, checkpoints and downloads, the pre-flight statistics, a
// preview of what is trained, and the log.

import { download, getJson, JOBS, postJson } from "./api.js";
import { LineChart } from "./chart.js";
import { bytes, clock, duration, errorView, facts, figure, fill, h, statusBadge, table, when } from "./dom.js";
import { poll } from "./poll.js";
import { showPreview } from "./preview.js";

const ACTIVE = new Set(["validating_files", "queued", "running", "paused"]);
const JOB_INTERVAL_MS = 1500;

function jobPath(id, ...rest) {
  return [JOBS, encodeURIComponent(id), ...rest].join("/");
}

/** Run `work` for a button, then show in `slot` the line it resolved to, or its error. */
async function act(slot, work) {
  fill(slot);
  try {
    const done = await work();
    if (done) fill(slot, h("div", { class: "notice" }, done));
  } catch (error) {
    fill(slot, errorView(error));
  }
}

/** The job's time series as chart series: `[id, label, split, field]`. */
const CHARTS = [
  ["loss", "Loss", [["train-loss", "train", "train", "loss"], ["valid-loss", "validation", "valid", "loss"]]],
  ["learning-rate", "Learning rate", [["learning-rate", "learning rate", "train", "learning_rate"]]],
  ["tokens-per-second", "Tokens per second", [["tokens-per-second", "tokens/s", "train", "tokens_per_second"]]],
  [
    "accuracy",
    "Token accuracy",
    [["train-accuracy", "train", "train", "mean_token_accuracy"], ["valid-accuracy", "validation", "valid", "mean_token_accuracy"]],
  ],
  ["reward-margin", "DPO reward margin", [["train-margin", "train", "train", "rewards_margins"], ["valid-margin", "validation", "valid", "rewards_margins"]]],
];

function series(points, [id, label, split, field]) {
  const values = points.filter((p) => p.split === split && p[field] !== null).map((p) => [p.step, p[field]]);
  return { id, label, points: values, dots: split === "valid" };
}

function latest(points, split, field) {
  for (let i = points.length - 1; i >= 0; i -= 1) {
    if (points[i].split === split && points[i][field] !== null) return points[i][field];
  }
  return null;
}

/** A part of the page redrawn only when its data changed (a poll mostly brings nothing
 * new, and a table rebuilt under the pointer would swallow clicks). */
class Section {
  constructor(render, props = {}) {
    this.render = render;
    this.element = h("div", props);
    this.shown = undefined;
  }

  update(...data) {
    const shown = JSON.stringify(data);
    if (shown === this.shown) return;
    this.shown = shown;
    fill(this.element, this.render(...data));
  }
}

export class JobPage {
  /** `changed`: called after an action changed the job (the list refreshes). */
  constructor(id, changed) {
    this.id = id;
    this.changed = changed;
    this.job = null;
    this.charts = CHARTS.map(([chartId, title]) => new LineChart(chartId, title));
    this.actionResult = h("div", { class: "slot" });
    this.error = h("div", { class: "slot" });
    this.preview = h("div", { class: "slot" });
    this.head = new Section((state) => this.headView(state));
    this.summary = new Section((job) => this.summaryView(job));
    this.latest = new Section((points) => this.latestView(points), { class: "latest" });
    this.checkpoints = new Section((outputs, page) => this.checkpointsView(outputs, page));
    this.statistics = new Section((statistics) => this.statisticsView(statistics));
    this.settings = new Section((settings) => this.settingsView(settings));
    this.events = new Section((page) => this.eventsView(page));
    this.element = h(
      "div",
      { id: "job-page", dataset: { jobId: id } },
      h("div", { class: "card" }, this.head.element, this.actionResult, this.error, this.summary.element),
      h(
        "div",
        { class: "card" },
        h("h2", {}, "Training curves"),
        this.latest.element,
        h("div", { class: "charts" }, this.charts.map((chart) => chart.element)),
      ),
      h("div", { class: "card" }, h("h2", {}, "Checkpoints and downloads"), this.checkpoints.element),
      h("div", { class: "card" }, h("h2", {}, "Log"), this.events.element),
      h(
        "div",
        { class: "card" },
        h("h2", {}, "Training data"),
        this.statistics.element,
        h("button", { type: "button", class: "quiet", id: "job-preview", onclick: () => this.showPreview() }, "Preview what is trained"),
        this.preview,
      ),
      h("div", { class: "card" }, h("h2", {}, "Settings"), this.settings.element),
    );
    this.poller = poll(() => this.refresh(), JOB_INTERVAL_MS);
  }

  stop() {
    this.poller.stop();
  }

  /** One poll: everything the page shows. Returns whether to poll again (until the job
   * has ended; its last answer has its final figures). */
  async refresh() {
    try {
      const [job, metrics, events, checkpoints] = await Promise.all([
        getJson(jobPath(this.id)),
        getJson(jobPath(this.id, "metrics")),
        getJson(jobPath(this.id, "events"), { limit: 100 }),
        getJson(jobPath(this.id, "checkpoints"), { limit: 100 }),
      ]);
      fill(this.error);
      this.job = job;
      // Each part gets only what it shows, so that a poll that brings a new step does
      // not rebuild its buttons.
      this.head.update({ id: job.id, status: job.status, pause_requested: job.pause_requested });
      this.summary.update(job);
      this.latest.update(metrics.data);
      CHARTS.forEach(([chartId, , lines], index) => {
        const drawn = lines.map((line) => series(metrics.data, line));
        this.charts[index].update(drawn);
        this.charts[index].element.hidden = chartId !== "loss" && drawn.every((one) => !one.points.length);
      });
      this.checkpoints.update({ id: job.id, status: job.status, result_files: job.result_files }, checkpoints);
      this.statistics.update(job.statistics);
      this.settings.update({ method: job.method, qlora: job.qlora, seed: job.seed, metadata: job.metadata, runtime: job.runtime });
      this.events.update(events);
      return ACTIVE.has(job.status);
    } catch (error) {
      fill(this.error, errorView(error));
      return error.status !== 404 && error.status !== 401;
    }
  }

  headView(job) {
    const button = (label, action, enabled) =>
      h("button", { type: "button", class: "quiet", disabled: !enabled, dataset: { action }, onclick: () => this.act(action) }, label);
    return h(
      "div",
      { class: "job-head" },
      h("h2", { class: "mono" }, job.id),
      statusBadge(job.status),
      job.pause_requested ? h("span", { class: "muted small" }, "pause requested") : null,
      h(
        "div",
        { class: "actions" },
        button("Pause", "pause", (job.status === "queued" || job.status === "running") && !job.pause_requested),
        button("Resume", "resume", job.status === "paused"),
        button("Cancel", "cancel", ACTIVE.has(job.status)),
      ),
    );
  }

  act(action) {
    act(this.actionResult, async () => {
      const job = await postJson(jobPath(this.id, action), {});
      this.poller.now();
      this.changed();
      return `${action[0].toUpperCase()}${action.slice(1)}: the job is ${job.status.replaceAll("_", " ")}.`;
    });
  }

  summaryView(job) {
    const progress = job.progress;
    return [
      job.error ? errorView(job.error) : null,
      progress ? h("progress", { max: progress.total_steps || 1, value: progress.step }) : null,
      facts([
        ["Base model", job.model],
        ["Fine-tuned model", job.fine_tuned_model],
        ["Training file", job.training_file],
        ["Validation file", job.validation_file],
        ["Progress", progress ? `step ${progress.step} of ${progress.total_steps} (${progress.epochs} epochs)` : null],
        ["Time per step", progress?.seconds_per_step ? duration(progress.seconds_per_step) : null],
        ["Estimated finish", job.estimated_finish ? `${clock(job.estimated_finish)} (in ${duration(job.estimated_finish - Date.now() / 1000)})` : null],
        ["Queue position", job.queue_position],
        ["Trained tokens", job.trained_tokens === null ? null : figure(job.trained_tokens)],
        ["Device", job.runtime ? `${job.runtime.device_name} (${job.runtime.compute_dtype})` : null],
        ["Attempts", job.attempts || null],
        ["Created", when(job.created_at)],
        ["Finished", when(job.finished_at)],
      ]),
    ];
  }

  latestView(points) {
    const shown = [
      ["train loss", latest(points, "train", "loss")],
      ["validation loss", latest(points, "valid", "loss")],
      ["learning rate", latest(points, "train", "learning_rate")],
      ["tokens/s", latest(points, "train", "tokens_per_second")],
      ["epoch", latest(points, "train", "epoch")],
      ["step", latest(points, "train", "step")],
    ].filter(([, value]) => value !== null);
    if (!shown.length) return h("span", { class: "muted" }, "No training step logged yet.");
    return shown.map(([label, value]) => h("div", { dataset: { latest: label } }, h("span", {}, label), h("span", {}, figure(value))));
  }

  downloadButton(label, path, id) {
    const result = h("span", { class: "muted small" });
    const button = h("button", {
      type: "button",
      class: "quiet",
      dataset: { download: id },
      onclick: () =>
        act(result, async () => {
          button.disabled = true;
          try {
            const saved = await download(path);
            return `Saved ${saved.name} (${bytes(saved.bytes)})`;
          } finally {
            button.disabled = false;
          }
        }),
    }, label);
    return h("span", {}, button, " ", result);
  }

  checkpointsView(job, page) {
    const downloads = [];
    if (job.status === "succeeded") {
      downloads.push(h("p", {}, this.downloadButton("Download adapter (.tar.gz)", jobPath(job.id, "artifacts", "adapter"), "adapter")));
    }
    for (const fileId of job.result_files) {
      downloads.push(h("p", {}, this.downloadButton(`Download result file (${fileId})`, `v1/files/${encodeURIComponent(fileId)}/content`, fileId)));
    }
    const rows = page.data.map((checkpoint) =>
      h(
        "tr",
        { dataset: { checkpoint: checkpoint.id } },
        h("td", { class: "num" }, checkpoint.step_number),
        h("td", { class: "num" }, figure(checkpoint.metrics.train_loss ?? null)),
        h("td", { class: "num" }, figure(checkpoint.metrics.valid_loss ?? null)),
        h("td", { class: "num" }, bytes(checkpoint.adapter_bytes)),
        h("td", { class: "small" }, when(checkpoint.created_at)),
        h("td", {}, this.downloadButton("Download", jobPath(job.id, "checkpoints", checkpoint.id, "adapter"), checkpoint.id)),
      ),
    );
    return [
      downloads.length ? downloads : h("p", { class: "muted" }, "The adapter can be downloaded once the job has succeeded."),
      rows.length
        ? table(["Step", "Train loss", "Valid loss", "Size", "Saved", ""], rows, { id: "checkpoints-table" })
        : h("p", { class: "muted" }, "No checkpoints kept."),
    ];
  }

  statisticsView(s) {
    if (!s) return h("p", { class: "muted" }, "The pre-flight statistics come once a pre-flight worker has read the data.");
    const pairs = [
      ["Examples", figure(s.examples)],
      ["Tokens", figure(s.tokens_total)],
      ["Trained tokens", figure(s.trainable_tokens)],
      ["Tokens per example", `min ${s.tokens_min}, mean ${figure(s.tokens_mean)}, p95 ${s.tokens_p95}, max ${s.tokens_max}`],
      ["Max sequence length", figure(s.max_seq_length)],
      ["Truncated examples", figure(s.truncated_examples)],
      ["Examples with nothing to train", figure(s.examples_without_trainable_tokens)],
      ["Chat template", s.chat_template === "model" ? "the model's own" : "the service's default (ChatML)"],
      ["EOS appended", s.eos_appended ? "yes" : "no"],
    ];
    if (s.preference) {
      const p = s.preference;
      pairs.push(["Prompt tokens", `mean ${figure(p.prompt_tokens_mean)}, max ${p.prompt_tokens_max}`]);
      pairs.push(["Chosen tokens", `mean ${figure(p.chosen_tokens_mean)}, max ${p.chosen_tokens_max}`]);
      pairs.push(["Rejected tokens", `mean ${figure(p.rejected_tokens_mean)}, max ${p.rejected_tokens_max}`]);
    }
    return h("div", { id: "statistics" }, facts(pairs));
  }

  settingsView(settings) {
    return h("details", {}, h("summary", {}, "Method, QLoRA settings and runtime, as resolved"), h("pre", {}, JSON.stringify(settings, null, 2)));
  }

  eventsView(page) {
    const rows = page.data.map((event) =>
      h("tr", { class: `level-${event.level}` }, h("td", {}, clock(event.created_at)), h("td", {}, event.level), h("td", {}, event.message)),
    );
    return [
      h("div", { class: "log" }, table(["Time", "Level", "Message"], rows, { id: "events-table" })),
      page.has_more ? h("p", { class: "muted small" }, "The newest 100 events.") : null,
    ];
  }

  showPreview() {
    if (this.job) showPreview(this.preview, this.job.training_file, this.job.model);
  }
}
