// One instance as a tree of jobs and tasks, updated by the task events of this instance, with
// inputs, every attempt's stdout/stderr/log (XML outputs indented), retries and actions.
import { buildQuery } from "./evq.js";
import { act, badge, errorBox, fill, h, kids, notify, statusKind, table } from "./ui.js";

const EVENTS = ["TASK_ENQUEUE", "TASK_EXECUTE", "TASK_PROGRESS", "TASK_TERMINATE",
  "INSTANCE_TERMINATED"];

/** Indented text of an XML output (element children of `<output method="xml">`). */
function prettyXml(node, depth = 0) {
  const pad = "  ".repeat(depth);
  if (node.nodeType === Node.TEXT_NODE) {
    const t = node.nodeValue.trim();
    return t ? `${pad}${t}\n` : "";
  }
  if (node.nodeType !== Node.ELEMENT_NODE) return "";
  const attrs = [...node.attributes].map((a) => ` ${a.name}="${a.value}"`).join("");
  const children = [...node.childNodes];
  if (!children.length) return `${pad}<${node.tagName}${attrs}/>\n`;
  if (children.length === 1 && children[0].nodeType === Node.TEXT_NODE) {
    return `${pad}<${node.tagName}${attrs}>${children[0].nodeValue}</${node.tagName}>\n`;
  }
  return `${pad}<${node.tagName}${attrs}>\n${children.map((c) => prettyXml(c, depth + 1)).join("")}`
    + `${pad}</${node.tagName}>\n`;
}

async function datastoreText(session, id) {
  const r = await session.query("datastore", "get", { id });
  if (r.getAttribute("gzip") !== "yes") return r.textContent;
  const bytes = Uint8Array.from(atob(r.textContent.trim()), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Response(stream).text();
}

/** A `<pre>` for a stream of one attempt; big ones stored in the datastore load on demand. */
function streamBlock(session, el, kind, label) {
  if (!el) return null;
  const dsid = el.getAttribute("datastore-id");
  let content;
  if (dsid) {
    const pre = h("pre", { class: kind, tabindex: 0, "aria-label": label });
    const load = h("button", { type: "button", "aria-label": `Load ${label}` }, "Load (large)");
    load.addEventListener("click", () => act(load, async () => {
      pre.textContent = await datastoreText(session, dsid);
      load.remove();
    }));
    content = [load, pre];
  } else if (el.getAttribute("method") === "xml") {
    content = h("pre", { class: `${kind} xml`, tabindex: 0, "aria-label": label },
      [...el.childNodes].map((c) => prettyXml(c)).join(""));
  } else {
    if (kind !== "stdout" && !el.textContent) return null;
    content = h("pre", { class: kind, tabindex: 0, "aria-label": label }, el.textContent);
  }
  return h("div", { class: "stream" }, h("h4", {}, kind), content);
}

function taskName(task) {
  return task.getAttribute("name") || task.getAttribute("path") || task.getAttribute("type") || "task";
}

export function render(root, session, { arg }) {
  const id = arg;
  const body = h("div", {}, "Loading…");
  root.append(body);
  const open = new Set(); // evqids of the tasks whose details are open, kept across updates
  document.title = `evQueue — instance ${id}`;

  /** Where the keyboard focus is (task and control), so an update does not lose it. */
  function focused() {
    const el = document.activeElement;
    if (!body.contains(el) || el === body) return null;
    const task = el.closest("[data-evqid]")?.dataset.evqid;
    const what = el.dataset.action ? `[data-action="${el.dataset.action}"]` : el.tagName;
    return { task, what };
  }

  function refocus(where) {
    if (!where) return;
    const scope = where.task ? body.querySelector(`[data-evqid="${where.task}"]`) : body;
    scope?.querySelector(where.what)?.focus();
  }

  function taskActions(inst, task) {
    if (inst.getAttribute("status") !== "EXECUTING") return null;
    const name = taskName(task);
    const evqid = task.getAttribute("evqid");
    const status = task.getAttribute("status");
    // failed, or waiting for its retry delay: what retrytask and skiptask accept
    const failed = statusKind(task) === "error"
      || (status === "TERMINATED" && !!task.getAttribute("retry_at"));
    const buttons = [];
    const button = (label, text, fn, done) => {
      const b = h("button", { type: "button", "aria-label": `${label} ${name}`,
        "data-action": label.toLowerCase() }, text);
      b.addEventListener("click", () => act(b, fn, done));
      buttons.push(b);
    };
    if (status === "EXECUTING" && task.getAttribute("pid")) {
      button("Kill", "Kill", () => session.query("instance", "killtask",
        { id, pid: task.getAttribute("pid") }), () => `Sent SIGTERM to ${name}`);
    }
    if (failed) {
      button("Retry", "Retry now", () => session.query("instance", "retrytask", { id, evqid }),
        () => `Retrying ${name}`);
    }
    if (failed || status === "QUEUED") {
      button("Skip", "Skip", () => session.query("instance", "skiptask", { id, evqid }),
        () => `Skipped ${name}`);
    }
    return buttons.length ? h("span", { class: "actions" }, buttons) : null;
  }

  function renderTask(inst, task) {
    const evqid = task.getAttribute("evqid");
    const kind = statusKind(task);
    const outputs = kids(task, "output");
    const stderrs = kids(task, "stderr");
    const logs = kids(task, "log");
    const inputs = kids(task, "input");
    const progression = task.getAttribute("progression");
    const info = [
      ["Type", task.getAttribute("type")], ["Path", task.getAttribute("path")],
      ["Queue", task.getAttribute("queue")], ["Host", task.getAttribute("host")],
      ["PID", task.getAttribute("pid")], ["Started", task.getAttribute("execution_time")],
      ["Return value", task.getAttribute("retval")], ["Error", task.getAttribute("error")],
      ["Details", task.getAttribute("details")],
      ["Retry at", task.getAttribute("retry_at")],
      ["Retries left", task.getAttribute("retry_times")],
      ["Retry level", task.getAttribute("retry_schedule_level")],
    ].filter(([, v]) => v);
    const attempts = outputs.map((o, i) => h("section", { class: "attempt", "data-attempt": i + 1 },
      h("h4", {}, `Attempt ${i + 1}: return value ${o.getAttribute("retval")}, `
        + `${o.getAttribute("execution_time") || ""} → ${o.getAttribute("exit_time") || ""}`),
      streamBlock(session, o, "stdout", `stdout of ${taskName(task)}, attempt ${i + 1}`),
      streamBlock(session, stderrs[i], "stderr", `stderr of ${taskName(task)}, attempt ${i + 1}`),
      streamBlock(session, logs[i], "log", `log of ${taskName(task)}, attempt ${i + 1}`))).reverse();
    const details = h("details", { open: open.has(evqid) },
      h("summary", {},
        h("span", { class: `dot ${kind}`, "aria-hidden": "true" }),
        h("span", { class: "task-name" }, taskName(task)), " ",
        h("span", { class: `badge ${kind}`, "data-status": task.getAttribute("status") },
          task.getAttribute("status") || "PENDING"),
        task.getAttribute("status") === "EXECUTING" && progression
          ? h("span", { class: "muted" }, ` ${progression}%`) : null,
        outputs.length > 1 ? h("span", { class: "muted" }, ` ${outputs.length} attempts`) : null,
        kind === "waiting" && task.getAttribute("retry_at")
          ? h("span", { class: "muted" }, ` retry at ${task.getAttribute("retry_at")}`) : null),
      h("div", { class: "task-body" },
        info.length ? h("dl", {}, info.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])) : null,
        inputs.length ? table(["Input", "Value"], inputs.map((i, n) => h("tr", {},
          h("th", { scope: "row" }, i.getAttribute("name") || `#${n + 1}`),
          h("td", {}, h("code", {}, i.textContent))))) : null,
        attempts.length ? attempts : h("p", { class: "muted" }, "Not run yet.")));
    details.addEventListener("toggle", () => {
      if (details.open) open.add(evqid);
      else open.delete(evqid);
    });
    return h("li", { class: `task task-${kind}`, "data-evqid": evqid, "data-task": taskName(task) },
      taskActions(inst, task), details);
  }

  function renderJobs(inst, container) {
    const subjobs = kids(container, "subjobs")[0];
    const jobs = subjobs ? kids(subjobs, "job") : [];
    if (!jobs.length) return null;
    return h("ul", { class: "tree", "aria-label": container === inst ? "Jobs and tasks" : undefined },
    jobs.map((job) => {
      const tasks = kids(kids(job, "tasks")[0] || job, "task");
      const notes = [job.getAttribute("condition") && `if ${job.getAttribute("condition")}`,
        job.getAttribute("loop") && `loop ${job.getAttribute("loop")}`,
        job.getAttribute("details")].filter(Boolean);
      return h("li", { class: "job", "data-evqid": job.getAttribute("evqid") },
      h("div", { class: "job-head" }, h("strong", {}, job.getAttribute("name") || "job"),
        notes.map((n) => h("span", { class: "muted" }, ` ${n}`))),
      h("ul", { class: "tasks", "aria-label": `Tasks of ${job.getAttribute("name") || "job"}` },
        tasks.map((t) => renderTask(inst, t))),
      renderJobs(inst, job));
    }));
  }

  function renderInstance(inst) {
    const status = inst.getAttribute("status");
    const params = kids(kids(inst, "parameters")[0] || inst, "parameter");
    const actions = [];
    if (status === "EXECUTING") {
      const b = h("button", { type: "button", "data-action": "cancel",
        "aria-label": `Cancel instance ${id}` }, "Cancel");
      b.addEventListener("click", () => act(b, () => session.query("instance", "cancel", { id }),
        () => `Instance ${id} cancelled: no new task starts; running tasks go on (kill them)`));
      actions.push(b);
    } else {
      const b = h("button", { type: "button", "data-action": "relaunch",
        "aria-label": `Relaunch instance ${id}` }, "Relaunch");
      b.addEventListener("click", () => act(b, async () => {
        const r = await session.query("instance", "debugresume", { id });
        const nid = r.getAttribute("workflow-instance-id");
        notify(`Relaunched as instance ${nid}`);
        location.hash = `#/instance/${nid}`;
      }));
      actions.push(b);
    }
    const meta = [["Started", inst.getAttribute("start_time")],
      ["Ended", inst.getAttribute("end_time")], ["Errors", inst.getAttribute("errors")],
      ["Running tasks", inst.getAttribute("running_tasks")],
      ["Queued tasks", inst.getAttribute("queued_tasks")],
      ["Retrying tasks", inst.getAttribute("retrying_tasks")],
      ["Host", inst.getAttribute("host")], ["User", inst.getAttribute("user")],
      ["Comment", inst.getAttribute("comment")]].filter(([, v]) => v);
    const where = focused();
    fill(body,
      h("h1", {}, `Instance ${id}: ${inst.getAttribute("name")} `, badge(inst)),
      h("div", { class: "actions" }, actions),
      h("dl", { class: "meta" }, meta.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      params.length ? h("section", {}, h("h2", {}, "Parameters"),
        table(["Name", "Value"], params.map((p) => h("tr", {},
          h("th", { scope: "row" }, p.getAttribute("name")), h("td", {}, p.textContent)))))
        : null,
      h("section", {}, h("h2", {}, "Jobs and tasks"),
        renderJobs(inst, inst) || h("p", {}, "No job.")));
    refocus(where);
  }

  return session.subscribe(EVENTS, buildQuery("instance", "query", { id }), (doc, err) => {
    if (err) return fill(body, h("h1", {}, `Instance ${id}`), errorBox(err));
    const inst = kids(doc, "workflow")[0];
    if (inst) renderInstance(inst);
  }, id);
}
