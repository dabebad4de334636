// Line charts of a job's time series, drawn as SVG: steps across, values up, one line
// per series (train and validation loss share a chart), a readout of the latest values
// that follows the pointer.

import { figure, fill, h } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 480;
const HEIGHT = 220;
const MARGIN = { left: 56, right: 14, top: 12, bottom: 28 };

function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  element.append(...children);
  return element;
}

/** Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten. */
export function ticks(lo, hi, integer = false, count = 5) {
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.1 || 1;
    [lo, hi] = [lo - pad, hi + pad];
  }
  const rough = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(rough));
  let step = [1, 2, 5, 10].map((m) => m * power).find((candidate) => candidate >= rough);
  if (integer) step = Math.max(1, Math.round(step));
  const first = Math.floor(lo / step) * step;
  const last = Math.ceil(hi / step) * step;
  const values = [];
  for (let value = first; value <= last + step / 2; value += step) values.push(Number(value.toPrecision(12)));
  return { lo: first, hi: last, values };
}

/** The point of `points` (sorted by step) whose step is nearest `step`. */
function nearest(points, step) {
  let best = points[0];
  for (const point of points) {
    if (Math.abs(point[0] - step) < Math.abs(best[0] - step)) best = point;
  }
  return best;
}

export class LineChart {
  /** `id` names the chart for tests and styles; `format` shows a value. */
  constructor(id, title, format = figure) {
    this.format = format;
    this.series = [];
    this.drawn = null;
    this.scale = null;
    this.svg = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": title });
    this.readout = h("div", { class: "readout" });
    this.legend = h("span", { class: "legend" });
    this.element = h(
      "figure",
      { class: "chart", dataset: { chart: id } },
      h("figcaption", {}, title, " ", this.legend),
      this.svg,
      this.readout,
    );
    this.svg.addEventListener("pointermove", (event) => this.showAt(event));
    this.svg.addEventListener("pointerleave", () => this.showAt(null));
  }

  /** `series`: [{id, label, points: [[step, value], ...], dots}], points sorted by step.
   * Redrawn only when the points changed. */
  update(series) {
    // Each keeps its colour (its place in `series`) whichever others have no points yet.
    const shown = series.map((one, index) => ({ ...one, index })).filter((one) => one.points.length);
    const drawn = JSON.stringify(shown);
    if (drawn === this.drawn) return;
    this.drawn = drawn;
    this.series = shown;
    this.draw();
    this.showAt(null);
  }

  draw() {
    const keys = this.series.map((one) => h("span", { class: `key-${one.index}` }, one.label));
    fill(this.legend, keys.length > 1 ? keys : null);
    const points = this.series.flatMap((one) => one.points);
    if (!points.length) {
      this.scale = null;
      this.svg.replaceChildren(svg("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle" }, "No points yet"));
      return;
    }
    const steps = points.map((point) => point[0]);
    const values = points.map((point) => point[1]);
    const xs = ticks(Math.min(...steps), Math.max(...steps), true);
    const ys = ticks(Math.min(...values), Math.max(...values));
    const [left, right, top, bottom] = [MARGIN.left, WIDTH - MARGIN.right, MARGIN.top, HEIGHT - MARGIN.bottom];
    const x = (step) => left + ((step - xs.lo) / (xs.hi - xs.lo)) * (right - left);
    const y = (value) => bottom - ((value - ys.lo) / (ys.hi - ys.lo)) * (bottom - top);
    this.scale = { x, step: (px) => xs.lo + ((px - left) / (right - left)) * (xs.hi - xs.lo), top, bottom };

    const children = [];
    for (const value of ys.values) {
      children.push(svg("line", { class: "grid-line", x1: left, x2: right, y1: y(value), y2: y(value) }));
      children.push(svg("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end" }, this.format(value)));
    }
    for (const step of xs.values) {
      children.push(svg("text", { x: x(step), y: bottom + 16, "text-anchor": "middle" }, String(step)));
    }
    children.push(svg("line", { class: "axis", x1: left, x2: left, y1: top, y2: bottom }));
    children.push(svg("line", { class: "axis", x1: left, x2: right, y1: bottom, y2: bottom }));
    for (const one of this.series) {
      const path = one.points.map(([step, value], i) => `${i ? "L" : "M"}${x(step).toFixed(1)},${y(value).toFixed(1)}`);
      children.push(
        svg("path", {
          class: `series series-${one.index}`,
          d: path.join(""),
          "data-series": one.id,
          "data-points": one.points.length,
        }),
      );
      if (one.dots || one.points.length === 1) {
        for (const [step, value] of one.points) {
          children.push(svg("circle", { class: `dot-${one.index}`, cx: x(step), cy: y(value), r: 2.5 }));
        }
      }
    }
    this.cursor = svg("line", { class: "cursor", x1: 0, x2: 0, y1: top, y2: bottom, visibility: "hidden" });
    children.push(this.cursor);
    this.svg.replaceChildren(...children);
  }

  /** The readout: each series' value at the step under the pointer, or its latest. */
  showAt(event) {
    if (!this.scale) {
      this.readout.textContent = "";
      return;
    }
    let at = null;
    if (event) {
      const box = this.svg.getBoundingClientRect();
      at = this.scale.step(((event.clientX - box.left) / box.width) * WIDTH);
    }
    const parts = this.series.map((one) => {
      const [step, value] = at === null ? one.points[one.points.length - 1] : nearest(one.points, at);
      return `${one.label} ${this.format(value)} (step ${step})`;
    });
    this.readout.textContent = parts.join(" · ");
    this.cursor.setAttribute("visibility", at === null ? "hidden" : "visible");
    if (at !== null) {
      const px = this.scale.x(Math.round(at));
      this.cursor.setAttribute("x1", px);
      this.cursor.setAttribute("x2", px);
    }
  }
}
