// Queues (waiting tasks, consumers) and live workers, refreshed every 3 s.
import {content, el, every, fmtTime, getJSON, setStatusLine} from "./common.js";

function flowerLink(href, text) {
  return href ? el("a", {href, rel: "noreferrer"}, text) : text;
}

async function main() {
  const queues = el("tbody", {id: "queues-body"});
  const workers = el("tbody", {id: "workers-body"});
  const flower = el("p", {id: "flower"});
  content().replaceChildren(flower,
    el("section", {"aria-labelledby": "q-h"}, el("h2", {id: "q-h"}, "Queues"),
      el("table", {}, el("thead", {}, el("tr", {}, ...["Queue", "Waiting tasks", "Consumers"]
        .map((h) => el("th", {scope: "col"}, h)))), queues)),
    el("section", {"aria-labelledby": "w-h"}, el("h2", {id: "w-h"}, "Workers"),
      el("table", {}, el("thead", {}, el("tr", {}, ...["Worker", "Queues", "Registered tasks"]
        .map((h) => el("th", {scope: "col"}, h)))), workers)));
  every(3000, async () => {
    const d = await getJSON("/ui/data/workers");
    flower.replaceChildren(d.flower ? el("a", {href: d.flower, rel: "noreferrer"},
      "Open Flower") : "Flower links need the server's ORCH_FLOWER_URL.");
    queues.replaceChildren(...d.queues.map((q) => el("tr", {"data-queue": q.name},
      el("th", {scope: "row"}, q.name + (q.default ? " (default)" : "")),
      el("td", {class: q.depth && !q.consumers.length ? "warn" : null}, q.depth),
      el("td", {}, q.consumers.join(", ") || "none: no worker consumes it"))));
    workers.replaceChildren(...d.workers.map((w) => el("tr", {"data-worker": w.name},
      el("th", {scope: "row"}, flowerLink(w.flower, w.name)),
      el("td", {}, w.queues.join(", ")), el("td", {}, w.tasks))));
    if (!d.workers.length) {
      workers.replaceChildren(el("tr", {}, el("td", {colspan: 3}, "No worker answered.")));
    }
    setStatusLine(`Updated ${fmtTime(d.now)}.`);
    document.body.dataset.ready = "true";
  });
}

main().catch((e) => setStatusLine(e.message));
