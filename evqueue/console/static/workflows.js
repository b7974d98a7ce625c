// Workflows by group, each with a launch form built from the parameters it declares.
import { buildQuery } from "./evq.js";
import { act, errorBox, field, fill, h, instanceLink, kids } from "./ui.js";

const EVENTS = ["WORKFLOW_CREATED", "WORKFLOW_REMOVED", "WORKFLOW_MODIFIED"];

function parameterNames(wf) {
  const params = kids(wf, "parameters")[0];
  return params ? kids(params, "parameter").map((p) => p.getAttribute("name")) : [];
}

function launchForm(session, wf, result) {
  const name = wf.getAttribute("name");
  const inputs = parameterNames(wf).map((p) => [p, h("input", { name: p, "data-parameter": p })]);
  const comment = h("input", { name: "comment" });
  const host = h("input", { name: "host", placeholder: "local" });
  const user = h("input", { name: "user" });
  const submit = h("button", { type: "submit" }, `Launch ${name}`);
  const form = h("form", { class: "launch", "aria-label": `Launch ${name}`,
    "data-launch": name },
  h("fieldset", {}, h("legend", {}, "Parameters"),
    inputs.length ? inputs.map(([p, input]) => field(p, input)) : h("p", {}, "None.")),
  h("fieldset", {}, h("legend", {}, "Options"),
    field("Comment", comment), field("Remote host (SSH)", host), field("Remote user", user)),
  submit);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    act(submit, async () => {
      const params = Object.fromEntries(inputs.map(([p, input]) => [p, input.value]));
      const r = await session.query("instance", "launch", {
        name, comment: comment.value, host: host.value, user: host.value ? user.value : "",
      }, params);
      const id = r.getAttribute("workflow-instance-id");
      fill(result, h("span", { "data-launched": id }, "Launched instance ", instanceLink(id)));
    });
  });
  return form;
}

export function render(root, session) {
  const list = h("div", {}, "Loading…");
  root.append(h("h1", {}, "Workflows"), list);
  const open = new Set(); // workflows whose launch form is shown, kept across refreshes

  const cancel = session.subscribe(EVENTS, buildQuery("workflows", "list", { full: "yes" }),
    (doc, err) => {
      if (err) return fill(list, errorBox(err));
      const groups = new Map();
      for (const wf of kids(doc, "workflow")) {
        const g = wf.getAttribute("group") || "(no group)";
        if (!groups.has(g)) groups.set(g, []);
        groups.get(g).push(wf);
      }
      if (!groups.size) return fill(list, h("p", {}, "No workflow you can see."));
      fill(list, [...groups.keys()].sort().map((g) => h("section", { class: "group" },
        h("h2", {}, g),
        h("ul", { class: "workflows" }, groups.get(g).map((wf) => {
          const name = wf.getAttribute("name");
          const result = h("p", { class: "result", role: "status" });
          const slot = h("div");
          const toggle = h("button", { type: "button", "aria-expanded": "false",
            "aria-label": `Launch ${name}…`, "data-open-launch": name }, "Launch…");
          const show = (on) => {
            toggle.setAttribute("aria-expanded", String(on));
            fill(slot, on ? launchForm(session, wf, result) : null);
            if (on) open.add(name);
            else open.delete(name);
          };
          toggle.addEventListener("click", () => show(!open.has(name)));
          if (open.has(name)) show(true);
          const params = parameterNames(wf);
          return h("li", { "data-workflow": name },
            h("div", { class: "row" },
              h("strong", {}, name),
              h("span", { class: "muted" }, wf.getAttribute("comment")),
              params.length ? h("span", { class: "muted" }, `parameters: ${params.join(", ")}`)
                : null,
              h("a", { href: `#/instances?filter_workflow=${encodeURIComponent(name)}` },
                "history"),
              toggle),
            slot, result);
        })))));
    });
  return cancel;
}
