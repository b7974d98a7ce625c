// Small DOM helpers shared by the pages.

/** Element factory: h("a", {href: "#/x", class: "c", onclick: fn}, "text", child, [more]). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "value") el.value = v;
    else if (k === "style") el.style.cssText = v; // CSSOM: the CSP forbids style attributes
    else if (k === "checked") el.checked = true;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

/** Replaces the content of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An error message for a failed query (rights included: the API decides, we just say it). */
export function errorBox(error) {
  const code = error?.code ? ` (${error.code})` : "";
  const text = error?.code === "INSUFFICIENT_RIGHTS"
    ? "You do not have the rights to see or do this."
    : error?.message || String(error);
  return h("p", { class: "error", role: "alert" }, text + code);
}

/** A notice that fades from the top of the page (results of actions). */
export function notify(text, kind = "info") {
  const area = document.getElementById("notices");
  const note = h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  area.append(note);
  setTimeout(() => note.remove(), 6000);
}

/** Runs an action from a button: disables it meanwhile, reports failures. */
export async function act(button, fn, done = null) {
  button.disabled = true;
  try {
    const r = await fn();
    if (done) notify(done(r));
  } catch (e) {
    notify(`${e.message}${e.code ? ` (${e.code})` : ""}`, "error");
  } finally {
    button.disabled = false;
  }
}

/** A horizontal bar for `value` out of `max`, with an accessible name. */
export function bar(value, max, label, kind = "") {
  const pct = max > 0 ? Math.min(100, Math.round((100 * value) / max)) : 0;
  return h("div", { class: `bar ${kind}`, role: "progressbar", "aria-label": label,
    "aria-valuemin": 0, "aria-valuemax": max, "aria-valuenow": value },
  h("div", { class: "fill", style: `width:${pct}%` }));
}

/** Status of an instance or task for colours: running, queued, ok, error, skipped, waiting. */
export function statusKind(el) {
  const status = el.getAttribute("status");
  if (el.tagName === "task") {
    if (status === "TERMINATED" && el.getAttribute("retry_at")) return "waiting"; // retry due
    if (status === "TERMINATED") {
      return el.getAttribute("retval") === "0" && !el.getAttribute("error") ? "ok" : "error";
    }
    if (status === "ABORTED") return "error";
    if (status === "EXECUTING") return "running";
    if (status === "SKIPPED") return "skipped";
    if (status === "WAITING") return "waiting";
    return "queued";
  }
  if (status === "EXECUTING") return "running";
  return Number(el.getAttribute("errors") || 0) > 0 ? "error" : "ok";
}

export function badge(el) {
  const status = el.getAttribute("status") || "";
  const kind = statusKind(el);
  const text = kind === "error" && status === "TERMINATED" ? "TERMINATED with errors" : status;
  return h("span", { class: `badge ${kind}`, "data-status": status }, text);
}

export function instanceLink(id, text = `#${id}`) {
  return h("a", { href: `#/instance/${id}` }, text);
}

/** Children of `el` with tag `name` (not descendants). */
export function kids(el, name) {
  return [...el.children].filter((c) => c.tagName === name);
}

export function table(headers, rows, attrs = {}) {
  return h("table", attrs,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows));
}

/** A labelled form field. */
export function field(label, control) {
  const id = control.id || `f-${Math.random().toString(36).slice(2)}`;
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}
