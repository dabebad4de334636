// Building the page from data: elements with text nodes only (never HTML from the API,
// so nothing it returns can run as script), and the formats figures are shown in.

/** An element: `h("td", {class: "num"}, "12")`. Props starting with "on" are listeners;
 * false, null and undefined props and children are left out; strings become text. */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  setProps(element, props);
  element.append(...nodes(children));
  return element;
}

export function setProps(element, props) {
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
}

export function nodes(children) {
  return children
    .flat(Infinity)
    .filter((child) => child !== undefined && child !== null && child !== false)
    .map((child) => (child instanceof Node ? child : String(child)));
}

/** Replace what `parent` holds. */
export function fill(parent, ...children) {
  parent.replaceChildren(...nodes(children));
  return parent;
}

/** A definition list of label/value pairs, leaving out pairs whose value is null. */
export function facts(pairs) {
  const shown = pairs.filter(([, value]) => value !== null && value !== undefined && value !== "");
  return h("dl", { class: "facts" }, shown.map(([label, value]) => h("div", {}, h("dt", {}, label), h("dd", {}, value))));
}

export function table(headers, rows, props = {}) {
  return h(
    "table",
    props,
    h("thead", {}, h("tr", {}, headers.map((header) => h("th", {}, header)))),
    h("tbody", {}, rows),
  );
}

export function statusBadge(status) {
  return h("span", { class: `status status-${status}` }, status.replaceAll("_", " "));
}

// -- formats --------------------------------------------------------------------------

export function when(unixSeconds) {
  return unixSeconds ? new Date(unixSeconds * 1000).toLocaleString() : "";
}

export function clock(unixSeconds) {
  return unixSeconds ? new Date(unixSeconds * 1000).toLocaleTimeString() : "";
}

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

/** A figure with about 4 significant digits: 0.0002, 1.234, 12,345. */
export function figure(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (Number.isInteger(x)) return x.toLocaleString();
  const magnitude = Math.abs(x);
  if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e6)) return x.toExponential(2);
  return x.toLocaleString(undefined, { maximumSignificantDigits: 4 });
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

// -- errors ---------------------------------------------------------------------------

/** One entry of an error's `details`: a field's problem ({param, message}) or an
 * uploaded file's ({line, row, field, message}). */
function detailLine(detail) {
  const where = [
    detail.param,
    detail.line ? `line ${detail.line}` : null,
    !detail.line && detail.row ? `example ${detail.row}` : null,
    detail.field ? `field ${detail.field}` : null,
  ].filter(Boolean);
  return h("li", {}, where.length ? h("code", {}, where.join(", ")) : null, where.length ? ": " : null, detail.message);
}

/** The API's error as the user reads it: its message, the field it names, and each
 * problem of its details. */
export function errorView(error) {
  const details = Array.isArray(error.details) ? error.details : [];
  // A single detail repeats the message.
  const extra = details.length > 1 || (details.length === 1 && !error.message.includes(details[0].message));
  return h(
    "div",
    { class: "error", role: "alert", dataset: { code: error.code ?? "", param: error.param ?? "" } },
    h("strong", {}, error.message),
    error.param || error.code
      ? h(
          "div",
          { class: "muted small" },
          error.param ? ["Field: ", h("code", {}, error.param)] : null,
          error.param && error.code ? " · " : null,
          error.code ? ["Code: ", h("code", {}, error.code)] : null,
          error.status ? ` · HTTP ${error.status}` : null,
        )
      : null,
    extra ? h("ul", {}, details.slice(0, 20).map(detailLine)) : null,
    details.length > 20 ? h("div", { class: "muted small" }, `and ${details.length - 20} more`) : null,
  );
}
