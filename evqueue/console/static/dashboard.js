// Live dashboard: queues, running instances with their progress, recent instances. Everything
// is pushed by events subscriptions (nothing polls).
import { buildQuery } from "./evq.js";
import { badge, bar, errorBox, fill, h, instanceLink, table } from "./ui.js";

const QUEUE_EVENTS = ["QUEUE_CREATED", "QUEUE_MODIFIED", "QUEUE_REMOVED", "QUEUE_ENQUEUE",
  "QUEUE_DEQUEUE", "QUEUE_EXECUTE", "QUEUE_TERMINATE"];
const RUNNING_EVENTS = ["TASK_ENQUEUE", "TASK_EXECUTE", "TASK_TERMINATE", "INSTANCE_TERMINATED",
  "INSTANCE_STARTED"];
const RECENT_EVENTS = ["INSTANCE_REMOVED", "INSTANCE_TERMINATED", "INSTANCE_STARTED"];
const TASK_EVENTS = ["TASK_EXECUTE", "TASK_TERMINATE", "TASK_PROGRESS"];
/** instances whose progress is followed (each costs an `instance query` per task event) */
const PROGRESS_MAX = 10;

/** Share of an instance done: finished tasks count 1, running ones their progression. */
export function progress(doc) {
  const tasks = [...doc.getElementsByTagName("task")];
  if (!tasks.length) return 0;
  let done = 0;
  for (const t of tasks) {
    const s = t.getAttribute("status");
    if (s === "TERMINATED" || s === "SKIPPED" || s === "ABORTED") done += 1;
    else if (s === "EXECUTING") done += Number(t.getAttribute("progression") || 0) / 100;
  }
  return Math.round((100 * done) / tasks.length);
}

export function render(root, session) {
  const queues = h("div", { "aria-live": "off" }, "Loading…");
  const running = h("div", {}, "Loading…");
  const recent = h("div", {}, "Loading…");
  root.append(
    h("h1", {}, "Dashboard"),
    h("div", { class: "grid" },
      h("section", { id: "queues", "aria-labelledby": "queues-h" },
        h("h2", { id: "queues-h" }, "Queues"), queues),
      h("section", { id: "running", "aria-labelledby": "running-h" },
        h("h2", { id: "running-h" }, "Running instances"), running)),
    h("section", { id: "recent", "aria-labelledby": "recent-h" },
      h("h2", { id: "recent-h" }, "Recent instances"), recent));

  const followed = new Map(); // instance id → {cancel, pct, bar}
  const cancels = [];

  cancels.push(session.subscribe(QUEUE_EVENTS, buildQuery("statistics", "query", { type: "queue" }),
    (doc, err) => {
      if (err) return fill(queues, errorBox(err));
      const rows = [...doc.getElementsByTagName("queue")].map((q) => {
        const name = q.getAttribute("name");
        const conc = Number(q.getAttribute("concurrency"));
        const run = Number(q.getAttribute("running_tasks"));
        const size = Number(q.getAttribute("size"));
        return h("tr", { "data-queue": name },
          h("th", { scope: "row" }, name),
          h("td", {}, bar(run, conc, `${name}: ${run} of ${conc} running`, "running"),
            h("span", { class: "num" }, `${run} / ${conc}`)),
          h("td", {}, bar(size, Math.max(conc, size), `${name}: ${size} queued`, "queued"),
            h("span", { class: "num" }, String(size))),
          h("td", {}, q.getAttribute("scheduler")));
      });
      fill(queues, rows.length ? table(["Queue", "Running / concurrency", "Queued", "Scheduler"],
        rows) : h("p", {}, "No queue."));
    }));

  function follow(id) {
    if (followed.has(id) || followed.size >= PROGRESS_MAX) return followed.get(id);
    const entry = { pct: 0, bar: null };
    entry.cancel = session.subscribe(TASK_EVENTS, buildQuery("instance", "query", { id }),
      (doc, err) => {
        const wf = doc?.querySelector("workflow");
        if (err || !wf) return;
        entry.pct = progress(wf);
        entry.bar?.replaceWith(progressBar(id, entry));
      }, id);
    followed.set(id, entry);
    return entry;
  }

  function progressBar(id, entry) {
    entry.bar = bar(entry.pct, 100, `Instance ${id}: ${entry.pct}% done`, "progress");
    return entry.bar;
  }

  cancels.push(session.subscribe(RUNNING_EVENTS,
    buildQuery("status", "query", { type: "workflows" }), (doc, err) => {
      if (err) return fill(running, errorBox(err));
      const items = [...doc.children].filter((c) => c.tagName === "workflow");
      const ids = new Set(items.map((w) => w.getAttribute("id")));
      for (const [id, entry] of followed) {
        if (!ids.has(id)) {
          entry.cancel();
          followed.delete(id);
        }
      }
      const rows = items.map((w) => {
        const id = w.getAttribute("id");
        const entry = follow(id);
        return h("tr", { "data-instance-id": id, "data-status": w.getAttribute("status") },
          h("td", {}, instanceLink(id)),
          h("td", {}, w.getAttribute("name")),
          h("td", {}, badge(w)),
          h("td", {}, w.getAttribute("start_time")),
          h("td", { class: "num" }, `${w.getAttribute("running_tasks") || 0} running, `
            + `${w.getAttribute("queued_tasks") || 0} queued`),
          h("td", {}, entry ? progressBar(id, entry) : ""));
      });
      const total = Number(doc.getAttribute("count") || items.length);
      fill(running, rows.length
        ? table(["Id", "Workflow", "Status", "Started", "Tasks", "Progress"], rows)
        : h("p", {}, "Nothing is running."),
      total > items.length ? h("p", {}, `${total - items.length} more not shown.`) : null);
    }));

  cancels.push(session.subscribe(RECENT_EVENTS,
    buildQuery("instances", "list", { limit: 15 }), (doc, err) => {
      if (err) return fill(recent, errorBox(err));
      const rows = [...doc.children].filter((c) => c.tagName === "workflow").map((w) => {
        const id = w.getAttribute("id");
        return h("tr", { "data-instance-id": id, "data-status": w.getAttribute("status") },
          h("td", {}, instanceLink(id)),
          h("td", {}, w.getAttribute("name")),
          h("td", {}, badge(w)),
          h("td", {}, w.getAttribute("start_time")),
          h("td", {}, w.getAttribute("end_time")),
          h("td", { class: "num" }, w.getAttribute("errors")),
          h("td", {}, w.getAttribute("comment")));
      });
      fill(recent, rows.length
        ? table(["Id", "Workflow", "Status", "Started", "Ended", "Errors", "Comment"], rows)
        : h("p", {}, "No instance yet."),
      h("p", {}, h("a", { href: "#/instances" }, "All instances…")));
    }));

  return () => {
    for (const c of cancels) c();
    for (const e of followed.values()) e.cancel();
  };
}
