// The search box: the user's messages (GET /api/search), results with their matched words
// highlighted (text nodes and <mark>, never markup from the data), each opening its conversation
// at the message. Ctrl/Cmd-K focuses it.

import { openDrawer, closeDrawer } from "./sidebar.js";
import { apiUrl, errorText, h } from "./util.js";

const DEBOUNCE_MS = 200;
const LIMIT = 20;

const $ = (id) => document.getElementById(id);
const view = {
  form: $("search-form"),
  input: $("search"),
  status: $("search-status"),
  results: $("search-results"),
  list: $("conversations-nav"),
};

let timer = 0;
let seq = 0;
let open = () => {};

/**
 * The snippet as nodes, `ranges` ([start, end) in characters, as the server counts them: code
 * points) wrapped in <mark>.
 */
export function highlighted(snippet, ranges) {
  const chars = Array.from(String(snippet));
  const nodes = [];
  let at = 0;
  const sorted = (Array.isArray(ranges) ? ranges : [])
    .filter((r) => Array.isArray(r) && Number.isInteger(r[0]) && Number.isInteger(r[1]))
    .sort((a, b) => a[0] - b[0]);
  for (const [start, end] of sorted) {
    const from = Math.max(start, at);
    const to = Math.min(end, chars.length);
    if (to <= from) continue;
    if (from > at) nodes.push(document.createTextNode(chars.slice(at, from).join("")));
    nodes.push(h("mark", {}, chars.slice(from, to).join("")));
    at = to;
  }
  if (at < chars.length) nodes.push(document.createTextNode(chars.slice(at).join("")));
  return nodes;
}

function setStatus(text) {
  view.status.textContent = text;
  view.status.hidden = !text;
}

function showResults(on) {
  view.results.hidden = !on;
  view.list.hidden = on;
}

function result(hit) {
  const button = h("button", { type: "button", className: "result", dataset: { testid: "search-result" } },
    h("span", { className: "result-title" }, hit.title || "New conversation"),
    h("span", { className: "result-snippet", dataset: { testid: "search-snippet" } },
      h("span", { className: "result-role" }, hit.role === "user" ? "You: " : "Parley: "),
      ...highlighted(hit.snippet, hit.highlights)));
  button.addEventListener("click", () => {
    closeDrawer();
    open(hit.sessionId, hit.messageId);
  });
  return h("li", {}, button);
}

async function run(query) {
  const mine = ++seq;
  const url = apiUrl("api/search");
  url.searchParams.set("q", query);
  url.searchParams.set("limit", String(LIMIT));
  try {
    const response = await fetch(url, { cache: "no-store" });
    if (mine !== seq) return;
    if (!response.ok) {
      view.results.replaceChildren();
      setStatus(await errorText(response));
      return;
    }
    const body = await response.json();
    if (mine !== seq) return;
    const hits = Array.isArray(body.results) ? body.results : [];
    view.results.replaceChildren(...hits.map(result));
    setStatus(hits.length ? "" : "No messages match.");
  } catch {
    if (mine === seq) setStatus("Cannot reach the server.");
  }
}

function changed() {
  clearTimeout(timer);
  const query = view.input.value.trim();
  if (!query) {
    seq++;
    showResults(false);
    setStatus("");
    view.results.replaceChildren();
    return;
  }
  showResults(true);
  timer = setTimeout(() => run(query), DEBOUNCE_MS);
}

/** `openAt(sessionId, messageId)` shows a result. */
export function initSearch(openAt) {
  open = openAt;
  view.input.addEventListener("input", changed);
  view.form.addEventListener("submit", (e) => {
    e.preventDefault();
    clearTimeout(timer);
    const query = view.input.value.trim();
    if (query) run(query);
  });
  view.input.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && view.input.value) {
      e.stopPropagation();
      view.input.value = "";
      changed();
    }
  });
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && !e.altKey && e.key.toLowerCase() === "k") {
      e.preventDefault();
      openDrawer();
      view.input.focus();
      view.input.select();
    }
  });
}
