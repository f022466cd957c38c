// Shared helpers of the web UI's pages: element building, JSON fetches with the
// session cookie (and the CSRF token on writes), formatting.  Plain ES modules, no build.

export const TERMINAL_RUN = new Set(["succeeded", "failed", "cancelled", "compensated",
  "compensation_failed"]);
export const TERMINAL_STEP = new Set(["succeeded", "failed", "skipped", "cancelled",
  "compensating", "compensated", "compensation_failed"]);
export const STEP_STATUSES = ["pending", "queued", "running", "retrying", "waiting",
  "succeeded", "failed", "skipped", "cancelled", "compensating", "compensated",
  "compensation_failed"];

/** Build an element: el("a", {href: "/x", class: "y"}, "text", child, ...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
/** Build an SVG element with attributes. */
export function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  return node;
}

function csrf() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

async function answer(resp) {
  if (resp.status === 401) {
    const next = encodeURIComponent(location.pathname);
    location.assign(`/ui/login?next=${next}`);
    throw new Error("signed out");
  }
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = body && body.error ? body.error : {message: resp.statusText, fix: ""};
    throw new Error(`${err.message}${err.fix ? " " + err.fix : ""}`);
  }
  return body;
}

/** GET a JSON document of the UI's data routes. */
export async function getJSON(path) {
  return answer(await fetch(path, {credentials: "same-origin",
    headers: {Accept: "application/json"}}));
}

/** POST to a UI data route with the page's CSRF token. */
export async function postJSON(path) {
  return answer(await fetch(path, {method: "POST", credentials: "same-origin",
    headers: {Accept: "application/json", "X-CSRF-Token": csrf()}}));
}

export function fmtTime(ts) {
  if (ts === null || ts === undefined) return "–";
  const d = new Date(ts * 1000);
  return d.toLocaleString(undefined, {hour12: false});
}

export function fmtDur(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  return m < 120 ? `${m} min ${Math.round(s % 60)} s` : `${(s / 3600).toFixed(1)} h`;
}

export function badge(status) {
  return el("span", {class: `badge st-${status}`}, status);
}

export function setStatusLine(text) {
  const line = document.getElementById("status-line");
  if (line) line.textContent = text;
}

/** Call fn now and every interval_ms while the page is visible. */
export function every(intervalMs, fn) {
  let timer = null;
  const tick = async () => {
    try { await fn(); } catch (e) { setStatusLine(String(e.message || e)); }
    timer = setTimeout(tick, intervalMs);
  };
  tick();
  return () => clearTimeout(timer);
}

export function content() {
  return document.getElementById("content");
}
