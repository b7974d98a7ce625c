// Statistics: instances launched per minute over the last hour (errors apart) as an inline
// SVG chart, and the daemon's counters. Redrawn when instances start or end.
import { buildQuery, formatTime, parseTime } from "./evq.js";
import { errorBox, fill, h, kids, table } from "./ui.js";

const MINUTES = 60;
const MAX_ROWS = 5000;
const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

/** Bars per minute: launched instances, the part that ended with errors in red. */
function chart(buckets) {
  const W = 720; const H = 200; const L = 36; const B = 24;
  const max = Math.max(1, ...buckets.map((b) => b.total));
  const bw = (W - L) / buckets.length;
  const y = (v) => H - B - ((H - B - 10) * v) / max;
  const total = buckets.reduce((a, b) => a + b.total, 0);
  const errors = buckets.reduce((a, b) => a + b.errors, 0);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart",
    "aria-label": `Instances launched per minute over the last hour: ${total} in all, `
      + `${errors} with errors, at most ${max} in one minute` },
  s("line", { x1: L, y1: H - B, x2: W, y2: H - B, class: "axis" }),
  s("text", { x: L - 4, y: y(max) + 4, "text-anchor": "end" }, String(max)),
  s("text", { x: L - 4, y: H - B + 4, "text-anchor": "end" }, "0"));
  buckets.forEach((b, i) => {
    const x = L + i * bw;
    if (b.total) {
      const title = s("title", {}, `${b.label}: ${b.total} launched, ${b.errors} with errors`);
      svg.append(s("rect", { x: x + 1, y: y(b.total), width: bw - 2, height: y(0) - y(b.total),
        class: "ok", "data-count": b.total }, title));
      if (b.errors) {
        svg.append(s("rect", { x: x + 1, y: y(b.errors), width: bw - 2,
          height: y(0) - y(b.errors), class: "error", "data-errors": b.errors }));
      }
    }
    if (i % 10 === 0) {
      svg.append(s("text", { x, y: H - 6 }, b.label.slice(11, 16)));
    }
  });
  return svg;
}

export function render(root, session) {
  const chartBox = h("div", {}, "Loading…");
  const counters = h("div");
  root.append(h("h1", {}, "Statistics"),
    h("section", { "aria-labelledby": "chart-h" },
      h("h2", { id: "chart-h" }, "Instances per minute (last hour)"),
      h("p", { class: "legend" }, h("span", { class: "key ok" }), " launched ",
        h("span", { class: "key error" }), " with errors"), chartBox),
    h("section", { "aria-labelledby": "counters-h" },
      h("h2", { id: "counters-h" }, "Counters since start"), counters));

  async function drawChart() {
    const now = session.serverNow();
    const start = new Date(now.getTime() - (MINUTES - 1) * 60000);
    start.setSeconds(0, 0);
    try {
      const r = await session.query("instances", "list",
        { filter_launched_from: formatTime(start), limit: MAX_ROWS });
      const buckets = Array.from({ length: MINUTES }, (_, i) => ({
        label: formatTime(new Date(start.getTime() + i * 60000)), total: 0, errors: 0 }));
      for (const w of kids(r, "workflow")) {
        const t = parseTime(w.getAttribute("start_time"));
        const i = Math.floor((t - start) / 60000);
        if (i < 0 || i >= MINUTES) continue;
        buckets[i].total += 1;
        if (Number(w.getAttribute("errors") || 0) > 0) buckets[i].errors += 1;
      }
      const rows = Number(r.getAttribute("rows") || 0);
      fill(chartBox, chart(buckets),
        rows > MAX_ROWS ? h("p", {}, `Only the last ${MAX_ROWS} of ${rows} instances.`) : null);
    } catch (e) {
      fill(chartBox, errorBox(e));
    }
  }

  // one chart query at a time: events arriving meanwhile ask for one more afterwards
  let drawing = null;
  let again = false;
  function redraw() {
    if (drawing) {
      again = true;
      return;
    }
    drawing = drawChart().finally(() => {
      drawing = null;
      if (again) {
        again = false;
        redraw();
      }
    });
  }

  return session.subscribe(["INSTANCE_STARTED", "INSTANCE_TERMINATED"],
    buildQuery("statistics", "query", { type: "global" }), (doc, err) => {
      redraw();
      if (err) return fill(counters, errorBox(err));
      const st = doc.querySelector("statistics");
      fill(counters, table(["Counter", "Value"], [...st.attributes].map((a) => h("tr", {},
        h("th", { scope: "row" }, a.name.replaceAll("_", " ")), h("td", { class: "num" }, a.value)))));
    });
}
