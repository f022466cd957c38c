// The workflow's graph as SVG, from the layout the server computed
// (orchestrator/web/layout.py): boxes coloured by step status, edges as curves,
// the critical path drawn thicker.  Each box is a keyboard-focusable button.
import {svg} from "./common.js";

/**
 * Draw `graph` ({nodes: [[id, x, y]], edges: [[from, to]], width, height, node_w,
 * node_h}) into `host`.  `onSelect(id)` runs when a box is clicked or activated with
 * Enter or Space.  Returns {setStatus(id, status), setCritical(ids), select(id)}.
 */
export function drawGraph(host, graph, statuses, onSelect) {
  const {node_w: w, node_h: h} = graph;
  const root = svg("svg", {width: graph.width, height: graph.height, role: "group",
    "aria-label": "Workflow graph", class: "graph"});
  const pos = new Map(graph.nodes.map(([id, x, y]) => [id, [x, y]]));
  const edgeLayer = svg("g", {class: "edges", "aria-hidden": "true"});
  const edges = new Map();
  const paths = [];
  for (const [from, to] of graph.edges) {
    const [x1, y1] = pos.get(from);
    const [x2, y2] = pos.get(to);
    const sx = x1 + w, sy = y1 + h / 2, ex = x2, ey = y2 + h / 2, mx = (sx + ex) / 2;
    const p = svg("path", {d: `M${sx},${sy} C${mx},${sy} ${mx},${ey} ${ex},${ey}`,
      class: "edge"});
    edges.set(`${from}>${to}`, p);
    paths.push(p);
  }
  edgeLayer.append(...paths);
  const nodeLayer = svg("g", {class: "nodes"});
  const boxes = new Map();
  const groups = [];
  for (const [id, x, y] of graph.nodes) {
    const status = statuses.get(id) || "pending";
    const g = svg("g", {class: `node st-${status}`, transform: `translate(${x},${y})`,
      tabindex: "0", role: "button", "data-step": id, "data-status": status,
      "aria-label": `${id}: ${status}`});
    const rect = svg("rect", {width: w, height: h, rx: 5});
    // a long id is squeezed, never cut: the box's visible text is its whole name
    const text = svg("text", {x: 6, y: h / 2 + 4, textLength: id.length > 20 ? w - 12 : null,
      lengthAdjust: id.length > 20 ? "spacingAndGlyphs" : null});
    text.textContent = id;
    const title = svg("title");
    title.textContent = `${id}: ${status}`;
    g.append(title, rect, text);
    boxes.set(id, g);
    groups.push(g);
  }
  nodeLayer.append(...groups);
  nodeLayer.addEventListener("click", (ev) => {
    const g = ev.target.closest("g.node");
    if (g) onSelect(g.dataset.step);
  });
  nodeLayer.addEventListener("keydown", (ev) => {
    const g = ev.target.closest("g.node");
    if (g && (ev.key === "Enter" || ev.key === " ")) {
      ev.preventDefault();
      onSelect(g.dataset.step);
    }
  });
  root.append(edgeLayer, nodeLayer);
  host.replaceChildren(root);
  let selected = null;
  let critical = [];
  return {
    setStatus(id, status) {
      const g = boxes.get(id);
      if (!g || g.dataset.status === status) return;
      g.classList.remove(`st-${g.dataset.status}`);
      g.classList.add(`st-${status}`);
      g.dataset.status = status;
      g.setAttribute("aria-label", `${id}: ${status}`);
      g.querySelector("title").textContent = `${id}: ${status}`;
    },
    setCritical(ids) {
      for (const id of critical) boxes.get(id)?.classList.remove("critical");
      for (const key of edges.keys()) edges.get(key).classList.remove("critical");
      critical = ids;
      for (const id of ids) boxes.get(id)?.classList.add("critical");
      for (let i = 1; i < ids.length; i++) {
        edges.get(`${ids[i - 1]}>${ids[i]}`)?.classList.add("critical");
      }
    },
    select(id) {
      if (selected) boxes.get(selected)?.classList.remove("selected");
      selected = id;
      const g = boxes.get(id);
      if (g) g.classList.add("selected");
    },
  };
}
