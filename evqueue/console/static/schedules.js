// Workflow schedules with their next run (the scheduler's status), enabled or disabled here.
import { buildQuery } from "./evq.js";
import { act, errorBox, fill, h, instanceLink, kids, table } from "./ui.js";

const EVENTS = ["WORKFLOWSCHEDULE_CREATED", "WORKFLOWSCHEDULE_MODIFIED",
  "WORKFLOWSCHEDULE_REMOVED", "WORKFLOWSCHEDULE_STARTED", "WORKFLOWSCHEDULE_STOPPED"];

export function render(root, session) {
  const list = h("div", {}, "Loading…");
  root.append(h("h1", {}, "Schedules"), list);
  let schedules = null;
  let next = new Map(); // schedule id → scheduler status element
  let error = null;

  function draw() {
    if (error) return fill(list, errorBox(error));
    if (!schedules) return;
    const rows = kids(schedules, "workflow_schedule").map((s) => {
      const sid = s.getAttribute("id");
      const active = s.getAttribute("active") === "1";
      const wf = s.getAttribute("workflow_name");
      const status = next.get(sid);
      const at = status?.getAttribute("scheduled_at");
      const toggle = h("button", { type: "button",
        "aria-label": `${active ? "Disable" : "Enable"} schedule ${sid} of ${wf}`,
        "data-toggle-schedule": sid }, active ? "Disable" : "Enable");
      toggle.addEventListener("click", () => act(toggle,
        () => session.query("workflow_schedule", active ? "lock" : "unlock", { id: sid })));
      const params = kids(s, "parameter").map((p) =>
        `${p.getAttribute("name")}=${p.getAttribute("value")}`).join(", ");
      return h("tr", { "data-schedule-id": sid, "data-active": active ? "yes" : "no" },
        h("td", {}, sid), h("td", {}, wf), h("td", {}, h("code", {}, s.getAttribute("schedule"))),
        h("td", {}, s.getAttribute("node")), h("td", {}, s.getAttribute("onfailure")),
        h("td", { class: "next-run" }, !active ? "disabled" : at === "running"
          ? ["running: ", instanceLink(status.getAttribute("workflow_instance_id"))]
          : at || "—"),
        h("td", {}, params), h("td", {}, s.getAttribute("comment")),
        h("td", {}, h("span", { class: `badge ${active ? "ok" : "skipped"}` },
          active ? "enabled" : "disabled"), " ", toggle));
    });
    fill(list, rows.length ? table(["Id", "Workflow", "Schedule", "Node", "On failure",
      "Next run", "Parameters", "Comment", "State"], rows) : h("p", {}, "No schedule."));
  }

  const cancels = [
    session.subscribe(EVENTS, buildQuery("workflow_schedules", "list",
      { display_parameters: "yes" }), (doc, err) => {
      error = err;
      schedules = doc;
      draw();
    }),
    session.subscribe(EVENTS, buildQuery("status", "query", { type: "scheduler" }), (doc, err) => {
      next = new Map();
      if (!err) {
        for (const w of doc.getElementsByTagName("workflow")) {
          next.set(w.getAttribute("workflow_schedule_id"), w);
        }
      }
      draw();
    }),
  ];
  return () => cancels.forEach((c) => c());
}
