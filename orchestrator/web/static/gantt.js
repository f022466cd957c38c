// The run's timeline as SVG: one row per step that started, split into queue wait
// (queued_at -> started_at) and execution (started_at -> ended_at, or now while it
// runs); the critical path's execution bars are outlined.
import {svg, fmtDur} from "./common.js";

const ROW = 18, LABEL = 170, WIDTH = 900, AXIS = 24;

export function drawGantt(host, steps, critical, now) {
  const rows = steps.filter((s) => s.started_at !== null || s.queued_at !== null)
    .sort((a, b) => (a.queued_at ?? a.started_at) - (b.queued_at ?? b.started_at));
  if (!rows.length) {
    host.replaceChildren(document.createTextNode("No step has been queued yet."));
    return;
  }
  const t0 = Math.min(...rows.map((s) => s.queued_at ?? s.started_at));
  const t1 = Math.max(...rows.map((s) => s.ended_at ?? now), t0 + 0.001);
  const scale = (WIDTH - LABEL - 10) / (t1 - t0);
  const x = (t) => LABEL + (t - t0) * scale;
  const crit = new Set(critical);
  const height = AXIS + rows.length * ROW + 4;
  const root = svg("svg", {width: WIDTH, height, class: "gantt", role: "img",
    "aria-label": `Timeline of ${rows.length} steps over ${fmtDur(t1 - t0)}; ` +
      `critical path: ${critical.join(", ") || "none"}`});
  const axis = svg("g", {class: "axis"});
  for (let i = 0; i <= 4; i++) {
    const t = t0 + (t1 - t0) * i / 4;
    const line = svg("line", {x1: x(t), x2: x(t), y1: AXIS - 6, y2: height, class: "tick"});
    const label = svg("text", {x: x(t), y: 12, "text-anchor": i === 4 ? "end" : "middle"});
    label.textContent = `+${fmtDur(t - t0)}`;
    axis.append(line, label);
  }
  root.append(axis);
  const frag = [];
  rows.forEach((s, i) => {
    const y = AXIS + i * ROW;
    const g = svg("g", {class: `row st-${s.status}${crit.has(s.id) ? " critical" : ""}`,
      "data-step": s.id});
    const label = svg("text", {x: LABEL - 6, y: y + 13, "text-anchor": "end"});
    label.textContent = s.id.length > 24 ? s.id.slice(0, 23) + "…" : s.id;
    g.append(label);
    const q = s.queued_at ?? s.started_at;
    const start = s.started_at ?? s.ended_at ?? now;  // skipped: queued, then ended
    if (start > q) {
      g.append(svg("rect", {x: x(q), y: y + 4, width: Math.max(1, x(start) - x(q)),
        height: ROW - 8, class: "wait"}));
    }
    if (s.started_at !== null) {
      const end = s.ended_at ?? now;
      g.append(svg("rect", {x: x(s.started_at), y: y + 2,
        width: Math.max(2, x(end) - x(s.started_at)), height: ROW - 4, class: "exec"}));
    }
    const title = svg("title");
    const wait = s.started_at !== null && s.queued_at !== null ? s.started_at - s.queued_at
      : null;
    const run = s.started_at !== null ? (s.ended_at ?? now) - s.started_at : null;
    title.textContent = `${s.id} (${s.status}): queue wait ${fmtDur(wait)}, ` +
      `execution ${fmtDur(run)}${crit.has(s.id) ? ", on the critical path" : ""}`;
    g.append(title);
    frag.push(g);
  });
  root.append(...frag);
  host.replaceChildren(root);
}
