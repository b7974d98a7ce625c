// Instance history: the filters of `instances list`, paging, kept in the URL (#/instances?…).
import { buildQuery } from "./evq.js";
import { badge, errorBox, field, fill, h, instanceLink, kids, table } from "./ui.js";

const EVENTS = ["INSTANCE_STARTED", "INSTANCE_TERMINATED", "INSTANCE_REMOVED", "INSTANCE_TAGGED",
  "INSTANCE_UNTAGGED"];
const TEXT_FILTERS = [
  ["filter_id", "Instance id", "number"], ["filter_node", "Node", "text"],
  ["filter_launched_from", "Launched from", "datetime-local"],
  ["filter_launched_until", "Launched until", "datetime-local"],
  ["filter_ended_from", "Ended from", "datetime-local"],
  ["filter_ended_until", "Ended until", "datetime-local"],
  ["filter_schedule_id", "Schedule id", "number"],
];
const PAGE_SIZES = ["30", "50", "100"];

/** datetime-local "YYYY-MM-DDTHH:MM" ↔ the daemon's "YYYY-MM-DD HH:MM:SS". */
const toDaemon = (v) => (v ? `${v.replace("T", " ")}${v.length === 16 ? ":00" : ""}` : "");
const toInput = (v) => (v ? v.replace(" ", "T") : "");

export function render(root, session, { params }) {
  const get = (k) => params.get(k) || "";
  const limit = Number(get("limit") || 30);
  const offset = Number(get("offset") || 0);
  const results = h("div", {}, "Loading…");

  const workflow = h("select", { name: "filter_workflow" }, h("option", { value: "" }, "(any)"));
  const tag = h("select", { name: "filter_tag_id" }, h("option", { value: "" }, "(any)"));
  const status = h("select", { name: "filter_status" }, ["", "EXECUTING", "TERMINATED"].map(
    (s) => h("option", { value: s, selected: get("filter_status") === s }, s || "(any)")));
  const errors = h("input", { type: "checkbox", name: "filter_error",
    checked: get("filter_error") === "yes" });
  const texts = TEXT_FILTERS.map(([k, label, type]) => [k, field(label, h("input", {
    type, name: k, value: type === "datetime-local" ? toInput(get(k)) : get(k), step: type === "datetime-local" ? 1 : undefined,
  }))]);
  const pname = h("input", { name: "parameter_name", value: get("parameter_name") });
  const pvalue = h("input", { name: "parameter_value", value: get("parameter_value") });
  const size = h("select", { name: "limit" }, PAGE_SIZES.map(
    (s) => h("option", { value: s, selected: String(limit) === s }, s)));

  const form = h("form", { class: "filters", role: "search", "aria-label": "Instance filters" },
    field("Workflow", workflow), field("Status", status),
    h("div", { class: "field check" }, h("label", {}, errors, " Only with errors")),
    texts.map(([, f]) => f), field("Tag", tag),
    field("Parameter name", pname), field("Parameter value", pvalue),
    field("Per page", size),
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Filter"),
      h("a", { href: "#/instances" }, "Reset")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (workflow.value) q.set("filter_workflow", workflow.value);
    if (status.value) q.set("filter_status", status.value);
    if (errors.checked) q.set("filter_error", "yes");
    if (tag.value) q.set("filter_tag_id", tag.value);
    for (const [k] of texts) {
      const v = form.elements[k].value;
      if (v) q.set(k, form.elements[k].type === "datetime-local" ? toDaemon(v) : v);
    }
    if (pname.value) {
      q.set("parameter_name", pname.value);
      q.set("parameter_value", pvalue.value);
    }
    if (size.value !== "30") q.set("limit", size.value);
    location.hash = `#/instances?${q}`;
  });
  root.append(h("h1", {}, "Instances"), form, results);

  // the choices of the selects (failures leave them with "(any)" only)
  session.query("workflows", "list").then((r) => {
    for (const w of kids(r, "workflow")) {
      const name = w.getAttribute("name");
      workflow.append(h("option", { value: name, selected: get("filter_workflow") === name }, name));
    }
  }).catch(() => {});
  session.query("tags", "list").then((r) => {
    for (const t of kids(r, "tag")) {
      const id = t.getAttribute("id");
      tag.append(h("option", { value: id, selected: get("filter_tag_id") === id },
        t.getAttribute("label")));
    }
  }).catch(() => {});

  const attrs = { limit, offset };
  for (const [k, v] of params) if (k.startsWith("filter_")) attrs[k] = v;
  if (/^[A-Za-z_][\w.-]*$/.test(get("parameter_name"))) attrs[`parameter_${get("parameter_name")}`] = get("parameter_value");

  const pageLink = (off, label) => {
    const q = new URLSearchParams(params);
    q.set("offset", String(off));
    return h("a", { href: `#/instances?${q}`, class: "button" }, label);
  };

  return session.subscribe(EVENTS, buildQuery("instances", "list", attrs), (doc, err) => {
    if (err) return fill(results, errorBox(err));
    const rows = kids(doc, "workflow").map((w) => {
      const id = w.getAttribute("id");
      const tags = w.querySelectorAll("tag");
      return h("tr", { "data-instance-id": id, "data-status": w.getAttribute("status") },
        h("td", {}, instanceLink(id)),
        h("td", {}, w.getAttribute("name")),
        h("td", {}, badge(w)),
        h("td", {}, w.getAttribute("node_name")),
        h("td", {}, w.getAttribute("host")),
        h("td", {}, w.getAttribute("start_time")),
        h("td", {}, w.getAttribute("end_time")),
        h("td", { class: "num" }, w.getAttribute("errors")),
        h("td", {}, [...tags].map((t) => h("span", { class: "tag" }, t.getAttribute("label")))),
        h("td", {}, w.getAttribute("comment")));
    });
    const total = Number(doc.getAttribute("rows") || 0);
    const last = Math.min(offset + rows.length, total);
    fill(results,
      h("nav", { class: "pager", "aria-label": "Pages" },
        offset > 0 ? pageLink(Math.max(0, offset - limit), "← Newer") : null,
        h("span", { "data-rows": total }, total ? `${offset + 1}–${last} of ${total}` : "No instance"),
        last < total ? pageLink(offset + limit, "Older →") : null),
      rows.length ? table(["Id", "Workflow", "Status", "Node", "Host", "Started", "Ended",
        "Errors", "Tags", "Comment"], rows, { class: "instances" }) : null);
  });
}
