// The run page: summary, graph coloured by step status (live, from the run's
// server-sent events), Gantt timeline with the critical path, the steps table and
// the selected step's details (input, output, error, traceback, Flower link).
import {STEP_STATUSES, TERMINAL_RUN, badge, content, el, fmtDur, fmtTime, getJSON, postJSON,
  setStatusLine} from "./common.js";
import {drawGraph} from "./graph.js";
import {drawGantt} from "./gantt.js";

const runId = document.body.dataset.runId;
const base = `/ui/data/runs/${encodeURIComponent(runId)}`;
let data = null;
let graph = null;
let selected = null;
let refetchTimer = null;
let events = null;
const parts = {};

function section(id, title, ...children) {
  return el("section", {id, "aria-labelledby": `${id}-h`},
    el("h2", {id: `${id}-h`}, title), ...children);
}

function layout() {
  parts.summary = el("dl", {class: "summary", id: "summary"});
  parts.actions = el("div", {class: "actions"});
  parts.graph = el("div", {class: "scroll graph-wrap", id: "graph", tabindex: "-1"});
  parts.gantt = el("div", {class: "scroll gantt-wrap", id: "gantt", tabindex: "0",
    role: "region", "aria-label": "Timeline chart"});
  parts.steps = el("tbody");
  parts.detail = el("div", {id: "step-detail-body"},
    el("p", {}, "Select a step in the graph or the table."));
  const legend = el("ul", {class: "legend", "aria-label": "Step statuses"},
    ...STEP_STATUSES.map((s) => el("li", {}, badge(s))),
    el("li", {}, el("span", {class: "badge critical-key"}, "critical path")));
  content().replaceChildren(
    parts.summary, parts.actions,
    section("graph-section", "Graph", legend, parts.graph),
    section("timeline", "Timeline",
      el("p", {class: "hint"}, "Light bars: queue wait (queued to started). ",
        "Solid bars: execution. Outlined: the critical path."), parts.gantt),
    section("step-detail", "Step", parts.detail),
    section("steps", "Steps", el("div", {class: "scroll table-wrap"},
      el("table", {class: "steps"},
        el("caption", {class: "visually-hidden"}, "Every step of the run"),
        el("thead", {}, el("tr", {},
          ...["Step", "Status", "Attempts", "Queue wait", "Duration", "Worker"]
            .map((h) => el("th", {scope: "col"}, h)))),
        parts.steps))));
}

function renderSummary() {
  const r = data.run;
  const rows = [
    ["Status", el("span", {id: "run-status"}, badge(r.status))],
    ["Workflow", el("a", {href: `/ui/workflows/${encodeURIComponent(r.workflow)}`},
      r.workflow)],
    ["Version", el("code", {}, r.version.slice(0, 12))],
    ["Started by", r.origin_text],
    ["Created", fmtTime(r.created_at)],
    ["Duration", fmtDur(r.duration_s ?? (data.now - r.created_at))],
    ["Input", el("span", {}, preview(data.input),
      el("a", {href: `${base}/input`, download: ""}, "Download input"))],
  ];
  const runLink = (id, attrs) => el("a", {...attrs, href: `/ui/runs/${encodeURIComponent(id)}`}, id);
  const ln = data.lineage || {};
  if (ln.resumed_from) rows.push(["Resumes", runLink(ln.resumed_from, {id: "resumed-from"})]);
  if (ln.resumes && ln.resumes.length) {
    rows.push(["Resumed by", el("span", {id: "resumed-by"},
      ...ln.resumes.flatMap((id, i) => (i ? [", ", runLink(id, {})] : [runLink(id, {})])))]);
  }
  if (ln.compensates) rows.push(["Undoes", runLink(ln.compensates, {id: "compensates"})]);
  if (ln.undo_run) rows.push(["Undo run", runLink(ln.undo_run, {id: "undo-run"})]);
  if (data.trace) {  // OpenTelemetry: the run's trace id, linked when a template is set
    const id = el("code", {id: "trace-id"}, data.trace.trace_id);
    rows.push(["Trace", data.trace.url
      ? el("a", {href: data.trace.url, id: "trace-link", rel: "noreferrer"}, id) : id]);
  }
  parts.summary.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const canCancel = data.can_cancel && !TERMINAL_RUN.has(r.status);
  parts.actions.replaceChildren(canCancel
    ? el("button", {type: "button", id: "cancel", class: "danger", onclick: cancelRun},
      "Cancel run")
    : "");
}

// The decision trail: the rule over the parents' statuses, then the condition, the
// values it read and its outcome (core/decisions.Decision.to_record).
function decisionTrail(d) {
  const parents = Object.entries(d.parents || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
  const items = [el("li", {}, `rule ${d.rule}`, parents ? ` over ${parents}` : "")];
  if (d.when !== undefined && d.when !== null) {
    items.push(el("li", {}, "condition ", el("code", {}, d.when), " was ",
      el("strong", {}, String(d.outcome))));
    for (const [k, v] of Object.entries(d.values || {})) {
      items.push(el("li", {}, el("code", {}, k), " = ", el("code", {}, JSON.stringify(v))));
    }
  }
  items.push(el("li", {}, d.runs ? "so it ran" : "so it did not run"));
  return el("ul", {id: "detail-decision", class: "trail"}, ...items);
}

function preview(p) {
  if (!p) return el("span", {}, "–");
  return el("pre", {class: "json", tabindex: "0"}, p.text + (p.truncated
    ? `\n… (${p.chars} characters in all: download it)` : ""));
}

async function cancelRun(ev) {
  ev.target.disabled = true;
  try {
    await postJSON(`${base}/cancel`);
    setStatusLine("Run cancelled.");
  } catch (e) {
    setStatusLine(`Cancel failed: ${e.message}`);
    ev.target.disabled = false;
  }
  await refresh();
}

function renderSteps() {
  const rows = data.steps.map((s) => el("tr", {"data-step": s.id,
    class: s.id === selected ? "selected" : null},
    el("th", {scope: "row"}, el("button", {type: "button", class: "link",
      onclick: () => select(s.id)}, s.id)),
    el("td", {class: "st"}, badge(s.status)),
    el("td", {}, `${s.attempt} / ${s.max_attempts}`),
    el("td", {}, fmtDur(s.started_at !== null && s.queued_at !== null
      ? s.started_at - s.queued_at : null)),
    el("td", {}, fmtDur(s.started_at !== null ? (s.ended_at ?? data.now) - s.started_at
      : null)),
    el("td", {}, s.worker || "–")));
  parts.steps.replaceChildren(...rows);
}

function renderDetail() {
  const s = data.steps.find((x) => x.id === selected);
  if (!s) return;
  const stepBase = `${base}/steps/${encodeURIComponent(s.id)}`;
  const dl = [
    ["Status", el("span", {id: "detail-status"}, badge(s.status))],
    ["Function", el("code", {}, s.function)],
    ["Attempts", `${s.attempt} of at most ${s.max_attempts}`],
    ["Worker", s.worker || "–"],
    ["Queued", fmtTime(s.queued_at)],
    ["Started", fmtTime(s.started_at)],
    ["Ended", fmtTime(s.ended_at)],
    ["Queue wait", fmtDur(s.started_at !== null && s.queued_at !== null
      ? s.started_at - s.queued_at : null)],
    ["Execution", fmtDur(s.started_at !== null ? (s.ended_at ?? data.now) - s.started_at
      : null)],
    ["Runs after", s.parents.join(", ") || "– (a first step)"],
    ["Trigger rule", s.trigger_rule],
  ];
  if (s.when) dl.push(["Condition", el("code", {}, s.when)]);
  if (s.reason) dl.push(["Reason", el("span", {id: "detail-reason"}, s.reason)]);
  if (s.decision) dl.push(["Decided by", decisionTrail(s.decision)]);
  if (s.retry_at) dl.push(["Next attempt", fmtTime(s.retry_at)]);
  if (s.wait) dl.push(["Waits for", JSON.stringify(s.wait)]);
  if (s.resolution) dl.push(["Wait ended by", JSON.stringify(s.resolution)]);
  if (s.flower) {
    dl.push(["Task", el("a", {href: s.flower, id: "flower-link", rel: "noreferrer"},
      "Open the task in Flower")]);
  } else if (s.task_id) {
    dl.push(["Task", el("code", {}, s.task_id)]);
  }
  const blocks = [el("h3", {id: "detail-title"}, s.id),
    el("dl", {class: "summary"}, ...dl.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]))];
  if (s.input) {
    blocks.push(el("h4", {}, "Input"), preview(s.input),
      el("a", {href: `${stepBase}/input`, download: ""}, "Download input"));
  }
  if (s.output) {
    blocks.push(el("h4", {}, "Output"), preview(s.output),
      el("a", {href: `${stepBase}/output`, download: "", id: "output-download"},
        "Download output"));
  }
  if (s.error) {
    blocks.push(el("h4", {}, "Error"), el("p", {class: "error", id: "detail-error"},
      `${s.error.type || "Error"}: ${s.error.message || ""}`));
    if (s.error.traceback) {
      blocks.push(el("details", {id: "traceback"}, el("summary", {}, "Traceback"),
        el("pre", {class: "traceback", tabindex: "0"}, s.error.traceback)));
    }
  }
  parts.detail.replaceChildren(...blocks);
}

function select(id, focus = true) {
  selected = id;
  graph.select(id);
  history.replaceState(null, "", `#step=${encodeURIComponent(id)}`);
  renderDetail();
  for (const tr of parts.steps.querySelectorAll("tr.selected")) tr.classList.remove("selected");
  parts.steps.querySelector(`tr[data-step="${CSS.escape(id)}"]`)?.classList.add("selected");
  if (focus) document.getElementById("detail-title")?.scrollIntoView({block: "nearest"});
}

function renderAll() {
  renderSummary();
  const statuses = new Map(data.steps.map((s) => [s.id, s.status]));
  if (!graph) {
    graph = drawGraph(parts.graph, data.graph, statuses, (id) => select(id));
  } else {
    for (const [id, st] of statuses) graph.setStatus(id, st);
  }
  graph.setCritical(data.critical);
  drawGantt(parts.gantt, data.steps, data.critical, data.now);
  renderSteps();
  if (selected) renderDetail();
  document.body.dataset.runStatus = data.run.status;
}

async function refresh() {
  data = await getJSON(base);
  renderAll();
}

function scheduleRefresh() {
  if (refetchTimer) return;
  refetchTimer = setTimeout(async () => {
    refetchTimer = null;
    try { await refresh(); } catch (e) { setStatusLine(e.message); }
  }, 400);
}

function follow() {
  events = new EventSource(`${base}/events`);
  const onStep = (ev) => {
    const e = JSON.parse(ev.data);
    if (e.step) {
      graph.setStatus(e.step, e.status);
      const s = data.steps.find((x) => x.id === e.step);
      if (s) {
        s.status = e.status;
        const cell = parts.steps.querySelector(`tr[data-step="${CSS.escape(e.step)}"] td.st`);
        cell?.replaceChildren(badge(e.status));
      }
    }
    scheduleRefresh();
  };
  events.addEventListener("step", onStep);
  events.addEventListener("run", scheduleRefresh);
  events.addEventListener("end", async () => {
    events.close();
    setStatusLine("The run ended.");
    await refresh();
  });
  events.onerror = () => {
    if (data && TERMINAL_RUN.has(data.run.status)) events.close();
  };
}

async function main() {
  layout();
  try {
    await refresh();
  } catch (e) {
    setStatusLine(`Cannot show the run: ${e.message}`);
    return;
  }
  const m = /step=([^&]+)/.exec(location.hash);
  if (m) select(decodeURIComponent(m[1]), false);
  performance.mark("orch-interactive");
  document.body.dataset.ready = "true";
  if (!TERMINAL_RUN.has(data.run.status)) {
    setStatusLine("Following the run live.");
    follow();
  } else {
    setStatusLine(`The run ${data.run.status}.`);
  }
}

main();
