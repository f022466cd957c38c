// One workflow: its graph, version, input schema, steps and recent runs.
import {badge, content, el, fmtDur, fmtTime, getJSON, setStatusLine} from "./common.js";
import {drawGraph} from "./graph.js";

const name = document.body.dataset.workflow;

async function main() {
  const w = await getJSON(`/ui/data/workflows/${encodeURIComponent(name)}`);
  const st = w.stats;
  const graphHost = el("div", {class: "scroll graph-wrap", id: "graph"});
  content().replaceChildren(
    el("dl", {class: "summary"},
      el("dt", {}, "Version"), el("dd", {}, el("code", {}, w.version)),
      el("dt", {}, "Description"), el("dd", {}, w.description || "–"),
      el("dt", {}, "Recent runs"), el("dd", {}, `${st.runs} (${st.ended} ended)`),
      el("dt", {}, "Success rate"), el("dd", {id: "success-rate"},
        st.success_rate === null ? "–" : `${Math.round(st.success_rate * 100)} %`),
      el("dt", {}, "Duration p50 / p95"), el("dd", {}, `${fmtDur(st.p50_s)} / ${fmtDur(st.p95_s)}`)),
    el("section", {"aria-labelledby": "g-h"}, el("h2", {id: "g-h"}, "Graph"), graphHost),
    el("section", {"aria-labelledby": "s-h"}, el("h2", {id: "s-h"}, "Input schema"),
      el("pre", {class: "json", tabindex: "0"}, JSON.stringify(w.input_schema, null, 2))),
    el("section", {"aria-labelledby": "st-h"}, el("h2", {id: "st-h"}, "Steps"),
      el("div", {class: "scroll table-wrap"}, el("table", {},
        el("thead", {}, el("tr", {}, ...["Step", "Function", "Runs after", "Condition",
          "Trigger rule", "Attempts"].map((h) => el("th", {scope: "col"}, h)))),
        el("tbody", {}, ...w.steps.map((s) => el("tr", {},
          el("th", {scope: "row"}, s.id), el("td", {}, el("code", {}, s.function)),
          el("td", {}, s.parents.join(", ") || "–"), el("td", {}, s.when || "–"),
          el("td", {}, s.trigger_rule), el("td", {}, s.max_attempts))))))),
    el("section", {"aria-labelledby": "r-h"}, el("h2", {id: "r-h"}, "Recent runs"),
      el("div", {class: "scroll table-wrap"}, el("table", {},
        el("thead", {}, el("tr", {}, ...["Run", "Status", "Started by", "Created", "Duration"]
          .map((h) => el("th", {scope: "col"}, h)))),
        el("tbody", {}, ...st.recent.map((r) => el("tr", {},
          el("th", {scope: "row"}, el("a", {href: `/ui/runs/${encodeURIComponent(r.run_id)}`},
            r.run_id.slice(0, 12))),
          el("td", {}, badge(r.status)), el("td", {}, r.origin_text),
          el("td", {}, fmtTime(r.created_at)), el("td", {}, fmtDur(r.duration_s)))))))));
  drawGraph(graphHost, w.graph, new Map(), (id) => {
    setStatusLine(`Step ${id}: ${w.steps.find((s) => s.id === id)?.function}`);
  });
  setStatusLine(`${w.steps.length} step(s), version ${w.version.slice(0, 12)}.`);
  document.body.dataset.ready = "true";
}

main().catch((e) => setStatusLine(e.message));
