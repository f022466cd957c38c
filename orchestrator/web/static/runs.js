// The runs list: filters (workflow, status, started by, time) in the page's query
// string, the list refreshed every 2 s.
import {badge, content, el, every, fmtDur, fmtTime, getJSON, setStatusLine} from "./common.js";

const params = new URLSearchParams(location.search);
const SINCE = [["", "any time"], ["900", "last 15 minutes"], ["3600", "last hour"],
  ["86400", "last 24 hours"], ["604800", "last 7 days"]];
const STATUSES = ["", "queued", "running", "succeeded", "failed", "cancelled", "compensating",
  "compensated", "compensation_failed"];
const ORIGINS = ["", "api", "cli", "python", "broker", "schedule", "event"];

function select(name, label, options, value) {
  return el("div", {class: "field"}, el("label", {for: `f-${name}`}, label),
    el("select", {id: `f-${name}`, name},
      ...options.map(([v, t]) => el("option", {value: v, selected: v === value}, t))));
}

async function main() {
  const wfs = await getJSON("/ui/data/workflows").catch(() => ({workflows: []}));
  const form = el("form", {method: "get", class: "filters", "aria-label": "Filter runs"},
    select("workflow", "Workflow", [["", "any"], ...wfs.workflows.map((w) => [w.name, w.name])],
      params.get("workflow") || ""),
    select("status", "Status", STATUSES.map((s) => [s, s || "any"]), params.get("status") || ""),
    select("origin", "Started by", ORIGINS.map((s) => [s, s || "anything"]),
      params.get("origin") || ""),
    select("since", "Created", SINCE, params.get("since") || ""),
    el("button", {type: "submit"}, "Filter"));
  form.addEventListener("change", () => form.requestSubmit());
  const tbody = el("tbody", {id: "runs-body"});
  content().replaceChildren(form, el("div", {class: "scroll table-wrap"},
    el("table", {class: "runs"}, el("caption", {class: "visually-hidden"}, "Runs, newest first"),
      el("thead", {}, el("tr", {}, ...["Run", "Workflow", "Status", "Started by", "Created",
        "Duration"].map((h) => el("th", {scope: "col"}, h)))), tbody)));
  every(2000, async () => {
    const q = new URLSearchParams();
    for (const k of ["workflow", "status", "origin"]) if (params.get(k)) q.set(k, params.get(k));
    const page = await (async () => {
      const since = params.get("since");
      if (since) q.set("since", String(Date.now() / 1000 - Number(since)));
      return getJSON(`/ui/data/runs?${q}`);
    })();
    tbody.replaceChildren(...page.runs.map((r) => el("tr", {"data-run": r.run_id},
      el("th", {scope: "row"}, el("a", {href: `/ui/runs/${encodeURIComponent(r.run_id)}`},
        r.run_id.slice(0, 12))),
      el("td", {}, r.workflow), el("td", {}, badge(r.status)), el("td", {}, r.origin_text),
      el("td", {}, fmtTime(r.created_at)),
      el("td", {}, fmtDur(r.duration_s ?? (r.ended_at ? null : page.now - r.created_at))))));
    if (!page.runs.length) {
      tbody.replaceChildren(el("tr", {}, el("td", {colspan: 6}, "No run matches.")));
    }
    setStatusLine(`${page.runs.length} run(s); updated ${fmtTime(page.now)}.`);
    document.body.dataset.ready = "true";
  });
}

main();
