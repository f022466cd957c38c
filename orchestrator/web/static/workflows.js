// Every workflow with its recent runs' success rate and duration percentiles.
import {content, el, fmtDur, getJSON, setStatusLine} from "./common.js";

function pct(x) {
  return x === null || x === undefined ? "–" : `${Math.round(x * 100)} %`;
}

async function main() {
  const data = await getJSON("/ui/data/workflows");
  content().replaceChildren(el("div", {class: "scroll table-wrap"}, el("table", {},
    el("caption", {class: "visually-hidden"}, "Workflows"),
    el("thead", {}, el("tr", {}, ...["Workflow", "Version", "Steps", "Recent runs",
      "Success rate", "Duration p50", "Duration p95"].map((h) => el("th", {scope: "col"}, h)))),
    el("tbody", {}, ...data.workflows.map((w) => el("tr", {},
      el("th", {scope: "row"}, el("a", {href: `/ui/workflows/${encodeURIComponent(w.name)}`},
        w.name)),
      el("td", {}, el("code", {}, w.version.slice(0, 12))), el("td", {}, w.steps),
      el("td", {}, w.runs), el("td", {}, pct(w.success_rate)), el("td", {}, fmtDur(w.p50_s)),
      el("td", {}, fmtDur(w.p95_s))))))));
  setStatusLine(`${data.workflows.length} workflow(s).`);
  document.body.dataset.ready = "true";
}

main().catch((e) => setStatusLine(e.message));
