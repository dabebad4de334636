// The organization's jobs, newest first, refreshed every few seconds: status and progress.

import { getJson, JOBS } from "./api.js";
import { errorView, fill, h, statusBadge, when } from "./dom.js";
import { poll } from "./poll.js";

const LIST_INTERVAL_MS = 3000;

function progressText(job) {
  if (job.status === "queued" && job.queue_position) return `#${job.queue_position} in queue`;
  if (!job.progress) return "";
  return `step ${job.progress.step} / ${job.progress.total_steps}`;
}

export class JobsList {
  constructor(panel) {
    this.body = panel.querySelector("#jobs-table tbody");
    this.empty = panel.querySelector("#jobs-empty");
    this.updated = panel.querySelector("#jobs-updated");
    this.error = panel.querySelector("#jobs-error");
    this.selected = null;
    this.shown = null;
    this.poller = poll(() => this.load(), LIST_INTERVAL_MS);
  }

  /** Load the list again now (after something changed it). */
  refresh() {
    this.poller.now();
  }

  async load() {
    try {
      const page = await getJson(JOBS, { limit: 50 });
      fill(this.error);
      const shown = JSON.stringify(page.data);
      if (shown !== this.shown) {
        this.shown = shown;
        this.render(page.data);
      }
      this.updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (error.status !== 401) fill(this.error, errorView(error));
    }
  }

  render(jobs) {
    this.empty.hidden = jobs.length > 0;
    fill(
      this.body,
      jobs.map((job) =>
        h(
          "tr",
          {
            dataset: { jobId: job.id },
            class: job.id === this.selected ? "selected" : null,
            onclick: () => (location.hash = `#/jobs/${job.id}`),
          },
          h(
            "td",
            {},
            h("a", { href: `#/jobs/${job.id}`, class: "mono" }, job.id),
            h("div", { class: "muted small" }, [job.model, job.user_provided_suffix, when(job.created_at)].filter(Boolean).join(" · ")),
          ),
          h("td", {}, statusBadge(job.status)),
          h("td", { class: "small" }, progressText(job)),
        ),
      ),
    );
  }

  select(id) {
    this.selected = id;
    for (const row of this.body.rows) row.classList.toggle("selected", row.dataset.jobId === id);
  }

  stop() {
    this.poller.stop();
  }
}
