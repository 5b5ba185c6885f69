// Parley web app: one conversation per browser, shared by its tabs through the session WebSocket.
//
// Every message on screen is drawn from server events (`user_message`, `turn_started`, `chunk`,
// `reply`, `cancelled`, `error`, `cleared`), whether they come over the WebSocket or over the
// SSE stream of POST /api/chat. The sending tab and every other tab take the same code path, and
// messages are keyed by their stored id, so history and live events never show one twice.

import { renderMarkdown } from "./markdown.js";

const SESSION_KEY = "chatSessionId"; // the seed client's key: tabs (and the seed client) share it
const THEME_KEY = "parleyTheme";
const AUTO_SEND_KEY = "parleyAutoSend";
const LANGUAGE_KEY = "parleyLanguage";
const SESSION_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

const PING_EVERY_MS = 25_000;
const PONG_TIMEOUT_MS = 10_000;
const CONNECT_TIMEOUT_MS = 10_000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
const OFFLINE_AFTER_ATTEMPTS = 4;
const MAX_RECORDING_MS = 120_000;
const TOAST_MS = 10_000;
const DRAFT_RESTORE_MS = 10_000;
const RENDER_FALLBACK_MS = 100;

const FINAL = new Set(["complete", "cancelled", "failed"]);
const RECORDING_TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4", "audio/webm"];

const $ = (id) => document.getElementById(id);
const ui = {
  chat: $("chat"),
  list: $("messages"),
  empty: $("empty"),
  status: $("status"),
  form: $("composer"),
  input: $("input"),
  send: $("send"),
  stop: $("stop"),
  mic: $("mic"),
  clear: $("clear"),
  newChat: $("new-chat"),
  theme: $("theme"),
  autoSend: $("auto-send"),
  language: $("language"),
  recording: $("recording"),
  toasts: $("toasts"),
};

// -- small helpers ----------------------------------------------------------------------------

function stored(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null; // storage blocked: the app still works, it just forgets
  }
}

function store(key, value) {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch {
    /* see stored() */
  }
}

function newSessionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return "session-" + Array.from(bytes, (b) => (b % 36).toString(36)).join("");
}

function apiUrl(path) {
  // Relative to the page, so Parley also works behind a proxy under a path prefix.
  return new URL(path, document.baseURI);
}

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function svgIcon(pathData) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", pathData);
  svg.append(path);
  return svg;
}

/** The message of an HTTP error: the `error` of Parley's JSON error body when there is one. */
async function errorText(response) {
  try {
    const body = await response.json();
    if (body && typeof body.error === "string" && body.error) return body.error;
  } catch {
    /* not JSON */
  }
  return `The server answered ${response.status} ${response.statusText}`.trim();
}

async function postJson(path, body) {
  return fetch(apiUrl(path), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

// -- toasts -----------------------------------------------------------------------------------

function showError(text) {
  const message = String(text || "Something went wrong");
  for (const existing of ui.toasts.children) {
    if (existing.dataset.text === message) existing.remove(); // the newest copy replaces the old
  }
  const close = h("button", {
    type: "button",
    className: "icon-btn",
    "aria-label": "Dismiss",
    title: "Dismiss",
  }, svgIcon("M6 6l12 12M18 6L6 18"));
  const toast = h("div", { className: "toast", role: "alert", dataset: { testid: "toast", text: message } },
    h("span", { className: "toast-text" }, message), close);
  const dismiss = () => toast.remove();
  close.addEventListener("click", dismiss);
  setTimeout(dismiss, TOAST_MS);
  ui.toasts.append(toast);
  while (ui.toasts.children.length > 3) ui.toasts.firstElementChild.remove();
}

// -- the conversation on screen -----------------------------------------------------------------

let sessionId = null;
/** id -> {id, role, turnId, content, status, error, createdAt, el, body, meta, feed} */
const messages = new Map();
/** turnId -> assistant message id, for turns that started and have not finished */
const running = new Map();
/** one Set per history load in flight: ids that live events touched meanwhile */
const liveSince = new Set();
const dirty = new Set();
let frame = null; // the pending render: {raf, timer}
let httpTurns = 0;
let view = 0; // bumped whenever the conversation on screen is emptied: older answers no longer apply
let draft = null; // {text, at}: the last message sent, until the server confirms it

// The view follows new text while the reader is at the bottom, and stays put once they scroll up.
let following = true;

function nearBottom() {
  const { scrollHeight, scrollTop, clientHeight } = ui.chat;
  return scrollHeight - scrollTop - clientHeight < 80;
}

function scrollToBottom() {
  following = true;
  ui.chat.scrollTop = ui.chat.scrollHeight;
}

function formatTime(iso) {
  const date = iso ? new Date(iso) : new Date();
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function createEntry(wire) {
  const body = h("div", { className: "content", dataset: { testid: "message-content" } });
  const meta = h("div", { className: "meta" });
  const el = h("li", {
    className: "msg",
    dataset: { testid: "message", role: wire.role, id: String(wire.id), turnId: wire.turnId ?? "" },
  }, h("div", { className: "bubble" }, body), meta);
  const entry = {
    id: wire.id,
    role: wire.role,
    turnId: wire.turnId,
    content: "",
    status: "pending",
    error: null,
    createdAt: null,
    el,
    body,
    meta,
    feed: null,
  };
  messages.set(entry.id, entry);
  // Keep the list in id order (the store's order); new messages almost always go last.
  let after = ui.list.lastElementChild;
  while (after && Number(after.dataset.id) > entry.id) after = after.previousElementSibling;
  if (after) after.after(el);
  else ui.list.prepend(el);
  return entry;
}

function renderBody(entry) {
  if (entry.role === "user") {
    entry.body.textContent = entry.content; // user text is shown as typed, never as markup
  } else if (entry.content) {
    entry.body.replaceChildren(renderMarkdown(entry.content));
  } else if (entry.status === "pending") {
    entry.body.replaceChildren(
      h("span", { className: "typing", "aria-label": "Writing a reply", role: "img" },
        h("span"), h("span"), h("span")));
  } else {
    const what = entry.status === "cancelled" ? "Stopped before any text." : "No reply.";
    entry.body.replaceChildren(h("span", { className: "placeholder" }, what));
  }
}

function renderMeta(entry) {
  const parts = [h("time", { dateTime: entry.createdAt ?? "" }, formatTime(entry.createdAt))];
  if (entry.status === "cancelled") {
    parts.push(h("span", { className: "badge badge-cancelled" }, "Stopped"));
  } else if (entry.status === "failed") {
    parts.push(h("span", { className: "badge badge-failed" }, "Failed"));
    if (entry.error) parts.push(h("span", { className: "meta-error" }, entry.error));
  }
  if (entry.role === "assistant" && FINAL.has(entry.status) && entry.content && navigator.clipboard) {
    const copy = h("button", { type: "button", className: "copy-btn", "aria-label": "Copy reply" }, "Copy");
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(entry.content);
        copy.textContent = "Copied";
        setTimeout(() => (copy.textContent = "Copy"), 1500);
      } catch {
        showError("Could not copy to the clipboard.");
      }
    });
    parts.push(copy);
  }
  entry.meta.replaceChildren(...parts);
  entry.el.dataset.status = entry.status;
}

function render(entry) {
  renderBody(entry);
  renderMeta(entry);
  dirty.delete(entry);
}

function renderLater(entry) {
  // Re-rendering the markdown of a long reply per chunk is wasted work: once per frame is enough.
  // Browsers pause animation frames in tabs they do not paint, so a timer makes sure text still
  // lands (and a tab shown later is current at once).
  dirty.add(entry);
  if (frame) return;
  const flush = () => {
    cancelAnimationFrame(frame.raf);
    clearTimeout(frame.timer);
    frame = null;
    for (const pending of dirty) renderBody(pending);
    dirty.clear();
  };
  frame = { raf: requestAnimationFrame(flush), timer: setTimeout(flush, RENDER_FALLBACK_MS) };
}

/** Add or update a message from its wire form ({id, role, content, status, turnId, ...}). */
function upsert(wire, { live = true } = {}) {
  let entry = messages.get(wire.id);
  if (entry && FINAL.has(entry.status) && !FINAL.has(wire.status)) return entry; // never un-finish
  if (!entry) entry = createEntry(wire);
  entry.content = wire.content ?? "";
  entry.status = wire.status ?? "complete";
  entry.error = wire.error ?? null;
  entry.createdAt = wire.created_at ?? entry.createdAt;
  if (live) for (const touched of liveSince) touched.add(entry.id);
  render(entry);
  updateChrome();
  return entry;
}

function removeEntry(entry) {
  entry.el.remove();
  messages.delete(entry.id);
  dirty.delete(entry);
}

function clearView() {
  view++;
  messages.clear();
  running.clear();
  dirty.clear();
  ui.list.replaceChildren();
  updateChrome();
}

function updateChrome() {
  ui.empty.hidden = messages.size > 0;
  const busy = running.size > 0 || httpTurns > 0;
  ui.stop.hidden = !busy;
  ui.list.setAttribute("aria-busy", String(running.size > 0));
}

// -- server events --------------------------------------------------------------------------

function startReply(turnId, messageId, feed) {
  let entry = messages.get(messageId);
  if (!entry) {
    entry = upsert({ id: messageId, role: "assistant", content: "", status: "pending", turnId });
  }
  if (!FINAL.has(entry.status)) {
    entry.feed ??= feed;
    running.set(turnId, messageId);
    updateChrome();
  }
  return entry;
}

function onChunk(event, feed) {
  const entry = messages.get(event.messageId) ?? startReply(event.turnId, event.messageId, feed);
  if (FINAL.has(entry.status)) return;
  // A reply fed by both the WebSocket and an SSE stream (the socket came back mid-turn) grows
  // from one of them only; the final event carries the whole text either way.
  if (entry.feed && entry.feed !== feed) return;
  entry.feed = feed;
  entry.content += event.text ?? "";
  if (liveSince.size) for (const touched of liveSince) touched.add(entry.id);
  renderLater(entry);
}

function finishReply(event) {
  if (event.message && event.message.id !== undefined) upsert(event.message);
  if (event.turnId) running.delete(event.turnId);
  updateChrome();
}

function handleEvent(event, feed) {
  switch (event.type) {
    case "user_message":
      upsert(event.message);
      if (draft && draft.text === event.message.content) draft = null;
      break;
    case "turn_started":
      startReply(event.turnId, event.messageId, feed);
      break;
    case "chunk":
      onChunk(event, feed);
      break;
    case "reply":
    case "cancelled":
      finishReply(event);
      break;
    case "error":
      onError(event);
      break;
    case "cleared":
      clearView();
      break;
    case "transcription":
      // The recording tab takes its text from the HTTP answer; other tabs keep their own drafts.
      break;
    default:
      break; // `connected`, `pong`, and event types newer than this page
  }
}

function onError(event) {
  if (event.message && event.message.id !== undefined) finishReply(event);
  const text = event.error?.error ?? "The server reported an error.";
  // An error without a turn is a refused frame, most likely the message just sent: give it back.
  if (!event.turnId && draft && Date.now() - draft.at < DRAFT_RESTORE_MS) restoreDraft();
  showError(text);
}

// -- history -----------------------------------------------------------------------------------

let historyStarted = 0;
let historyApplied = 0;

async function loadHistory() {
  const seq = ++historyStarted;
  const forSession = sessionId;
  const forView = view;
  const touched = new Set();
  liveSince.add(touched);
  try {
    const url = apiUrl("api/history");
    url.searchParams.set("sessionId", forSession);
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) {
      showError(`Could not load the conversation: ${await errorText(response)}`);
      return;
    }
    const body = await response.json();
    // A newer answer is on screen, or the view was cleared after this answer was written.
    if (forView !== view || seq < historyApplied) return;
    historyApplied = seq;
    reconcile(Array.isArray(body.messages) ? body.messages : [], touched);
  } catch {
    // Unreachable server: the status pill says so, and the next connect loads history again.
  } finally {
    liveSince.delete(touched);
  }
}

function reconcile(list, touched) {
  const first = messages.size === 0;
  const seen = new Set();
  for (const wire of list) {
    seen.add(wire.id);
    upsert(wire, { live: false });
  }
  // Gone from the store (cleared while this tab was offline), unless live events added it since.
  for (const entry of [...messages.values()]) {
    if (!seen.has(entry.id) && !touched.has(entry.id) && FINAL.has(entry.status)) removeEntry(entry);
  }
  for (const [turnId, id] of running) {
    const entry = messages.get(id);
    if (!entry || FINAL.has(entry.status)) running.delete(turnId);
  }
  updateChrome();
  if (first) scrollToBottom();
}

// -- the WebSocket ----------------------------------------------------------------------------

let socket = null;
let socketGen = 0;
let attempts = 0;
let everConnected = false;
let reconnectTimer = 0;
let pingTimer = 0;
let pongTimer = 0;
let openTimer = 0;

function setStatus(state, detail) {
  const labels = {
    connecting: "Connecting…",
    connected: "Connected",
    reconnecting: "Reconnecting…",
    offline: "Offline",
  };
  ui.status.dataset.state = state;
  ui.status.querySelector(".status-text").textContent = labels[state];
  ui.status.title = detail ?? labels[state];
}

function socketOpen() {
  return socket !== null && socket.readyState === WebSocket.OPEN;
}

function connect() {
  clearTimeout(reconnectTimer);
  const gen = ++socketGen;
  const url = apiUrl("ws");
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("sessionId", sessionId);
  if (!navigator.onLine) setStatus("offline", "This device is offline");
  else setStatus(everConnected ? "reconnecting" : "connecting");
  let ws;
  try {
    ws = new WebSocket(url);
  } catch {
    scheduleReconnect();
    return;
  }
  socket = ws;
  // A handshake lost in a dead network can hang far longer than any backoff step.
  openTimer = setTimeout(() => gen === socketGen && dropSocket(), CONNECT_TIMEOUT_MS);
  ws.addEventListener("message", (msg) => {
    if (gen !== socketGen) return;
    clearTimeout(openTimer);
    clearTimeout(pongTimer);
    let event;
    try {
      event = JSON.parse(msg.data);
    } catch {
      return;
    }
    if (event.type === "connected") onConnected();
    else handleEvent(event, "ws");
  });
  ws.addEventListener("close", () => {
    if (gen !== socketGen) return;
    dropSocket();
  });
}

function onConnected() {
  attempts = 0;
  everConnected = true;
  setStatus("connected", "Live: messages from other tabs and devices appear here");
  startKeepalive();
  // Whatever happened while this socket was away (or before it subscribed) comes from history.
  loadHistory();
}

/** Forget the current socket (dead or closing) and plan the next attempt. */
function dropSocket() {
  socketGen++;
  stopKeepalive();
  if (socket) {
    try {
      socket.close();
    } catch {
      /* already closed */
    }
  }
  socket = null;
  for (const entry of messages.values()) if (entry.feed === "ws") entry.feed = null;
  scheduleReconnect();
}

function scheduleReconnect() {
  clearTimeout(reconnectTimer);
  // Exponential backoff with jitter, so a restarted server is not hit by every tab at once.
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempts);
  const delay = ceiling / 2 + Math.random() * (ceiling / 2);
  attempts++;
  const seconds = Math.ceil(delay / 1000);
  if (!navigator.onLine) setStatus("offline", "This device is offline");
  else if (attempts >= OFFLINE_AFTER_ATTEMPTS) setStatus("offline", `Server unreachable; retrying in ${seconds} s`);
  else setStatus("reconnecting", `Reconnecting in ${seconds} s`);
  reconnectTimer = setTimeout(connect, delay);
}

function reconnectNow() {
  if (socket) return;
  attempts = 0;
  connect();
}

function startKeepalive() {
  stopKeepalive();
  pingTimer = setInterval(() => {
    if (!socketOpen()) return;
    socket.send(JSON.stringify({ type: "ping" }));
    clearTimeout(pongTimer);
    // A socket that stops answering (a sleeping laptop, a dropped NAT entry) never says "close".
    pongTimer = setTimeout(dropSocket, PONG_TIMEOUT_MS);
  }, PING_EVERY_MS);
}

function stopKeepalive() {
  clearInterval(pingTimer);
  clearTimeout(pongTimer);
  clearTimeout(openTimer);
}

// -- sending ----------------------------------------------------------------------------------

function restoreDraft() {
  if (draft && !ui.input.value.trim()) {
    ui.input.value = draft.text;
    inputChanged();
  }
  draft = null;
}

async function send(text) {
  if (!text.trim()) return;
  draft = { text, at: Date.now() };
  scrollToBottom();
  if (socketOpen()) {
    socket.send(JSON.stringify({ type: "chat", message: text }));
    return;
  }
  await sendOverHttp(text);
}

async function sendOverHttp(text) {
  httpTurns++;
  updateChrome();
  let finished = false;
  try {
    let response;
    try {
      response = await fetch(apiUrl("api/chat"), {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify({ message: text, sessionId, stream: true }),
      });
    } catch {
      restoreDraft();
      showError("Cannot reach the server. Your message was not sent.");
      return;
    }
    if (!response.ok) {
      restoreDraft();
      showError(await errorText(response));
      return;
    }
    await readEvents(response.body, (event) => {
      handleEvent(event, "sse");
      if (["reply", "cancelled", "error"].includes(event.type)) finished = true;
    });
    if (!finished) {
      showError("The connection dropped while the reply was written; it will appear once reconnected.");
    }
  } catch {
    if (!finished) showError("The connection dropped while the reply was written.");
  } finally {
    httpTurns--;
    for (const entry of messages.values()) if (entry.feed === "sse") entry.feed = null;
    updateChrome();
  }
}

/** Read a text/event-stream body, calling `onEvent` with each event's JSON data. */
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const blocks = buffer.split(/\r?\n\r?\n/);
    buffer = blocks.pop();
    for (const block of blocks) {
      let name = "message";
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue;
      try {
        const event = JSON.parse(data.join("\n"));
        event.type ??= name;
        onEvent(event);
      } catch {
        /* a malformed event: skip it, the final event still settles the turn */
      }
    }
  }
}

async function stopTurn() {
  if (socketOpen()) {
    socket.send(JSON.stringify({ type: "stop" }));
    return;
  }
  try {
    const response = await postJson("api/stop", { sessionId });
    if (!response.ok) showError(await errorText(response));
  } catch {
    showError("Cannot reach the server to stop the reply.");
  }
}

async function clearConversation() {
  try {
    const response = await postJson("api/clear", { sessionId });
    if (!response.ok) {
      showError(await errorText(response));
      return;
    }
    clearView(); // the `cleared` event does the same; this covers a tab whose socket is down
  } catch {
    showError("Cannot reach the server: the conversation was not cleared.");
  }
}

function useSession(id, { fresh = false } = {}) {
  sessionId = id;
  draft = null;
  clearView();
  if (fresh) store(SESSION_KEY, id);
  socketGen++;
  if (socket) socket.close(1000, "session changed");
  socket = null;
  stopKeepalive();
  everConnected = false;
  attempts = 0;
  loadHistory();
  connect();
}

// -- the composer -----------------------------------------------------------------------------

function inputChanged() {
  const input = ui.input;
  input.style.height = "auto";
  input.style.height = `${input.scrollHeight}px`;
  ui.send.disabled = !input.value.trim();
}

function submitInput() {
  const text = ui.input.value;
  if (!text.trim()) return;
  ui.input.value = "";
  inputChanged();
  send(text);
}

// -- voice input ------------------------------------------------------------------------------

const PLACEHOLDER = ui.input.placeholder;
let recorder = null;
let recordTicker = 0;
let transcribing = false;
let askingForMic = false;

function recordingType() {
  if (typeof MediaRecorder.isTypeSupported !== "function") return "";
  return RECORDING_TYPES.find((type) => MediaRecorder.isTypeSupported(type)) ?? "";
}

function extensionOf(type) {
  if (type.includes("ogg")) return "ogg";
  if (type.includes("mp4") || type.includes("aac")) return "m4a";
  return "webm";
}

function micErrorText(err) {
  switch (err?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was denied. Allow the microphone for this site in the browser settings.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found.";
    case "NotReadableError":
      return "The microphone is busy or could not be started.";
    default:
      return `Could not start the microphone${err?.message ? `: ${err.message}` : "."}`;
  }
}

function setMicState(state) {
  const mic = ui.mic;
  mic.classList.toggle("recording", state === "recording");
  mic.classList.toggle("busy", state === "transcribing");
  mic.setAttribute("aria-pressed", String(state === "recording"));
  mic.disabled = state === "transcribing";
  const label = {
    idle: "Record a voice message",
    recording: "Stop recording",
    transcribing: "Transcribing…",
  }[state];
  mic.setAttribute("aria-label", label);
  mic.title = label;
  // Said once per change for screen readers; the ticking timer is only in the placeholder.
  ui.recording.textContent = { idle: "", recording: "Recording", transcribing: "Transcribing" }[state];
  ui.input.placeholder = state === "transcribing" ? "Transcribing…" : PLACEHOLDER;
}

async function toggleRecording() {
  if (recorder) {
    recorder.stop();
    return;
  }
  if (transcribing || askingForMic) return;
  if (!navigator.mediaDevices?.getUserMedia || typeof MediaRecorder === "undefined") {
    showError(window.isSecureContext
      ? "This browser cannot record audio."
      : "The microphone needs a secure page: open Parley over https:// or on localhost.");
    return;
  }
  let stream;
  askingForMic = true; // the permission prompt can take a while: a second tap must not ask twice
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true },
    });
  } catch (err) {
    showError(micErrorText(err));
    return;
  } finally {
    askingForMic = false;
  }
  const type = recordingType();
  let rec;
  try {
    rec = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
  } catch (err) {
    stream.getTracks().forEach((track) => track.stop());
    showError(`Recording could not start: ${err.message}`);
    return;
  }
  const parts = [];
  const started = Date.now();
  rec.addEventListener("dataavailable", (e) => {
    if (e.data.size) parts.push(e.data);
  });
  rec.addEventListener("stop", () => {
    stream.getTracks().forEach((track) => track.stop());
    clearInterval(recordTicker);
    recorder = null;
    const blobType = rec.mimeType || type || "audio/webm";
    const blob = new Blob(parts, { type: blobType });
    if (!blob.size) {
      setMicState("idle");
      showError("Nothing was recorded.");
      return;
    }
    transcribe(blob, blobType);
  });
  rec.addEventListener("error", (e) => showError(`Recording failed: ${e.error?.message ?? "unknown error"}`));
  recorder = rec;
  rec.start();
  setMicState("recording");
  const tick = () => {
    const elapsed = Date.now() - started;
    const s = Math.floor(elapsed / 1000);
    ui.input.placeholder = `Listening… ${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    if (elapsed >= MAX_RECORDING_MS && rec.state === "recording") rec.stop();
  };
  tick();
  recordTicker = setInterval(tick, 250);
}

async function transcribe(blob, type) {
  transcribing = true;
  setMicState("transcribing");
  try {
    const form = new FormData();
    form.append("audio", blob, `recording.${extensionOf(type)}`);
    form.append("sessionId", sessionId);
    if (ui.language.value) form.append("language", ui.language.value);
    let response;
    try {
      response = await fetch(apiUrl("api/transcribe"), { method: "POST", body: form });
    } catch {
      showError("Transcription failed: cannot reach the server.");
      return;
    }
    if (!response.ok) {
      showError(`Transcription failed: ${await errorText(response)}`);
      return;
    }
    const text = String((await response.json()).text ?? "").trim();
    if (!text) {
      showError("No speech was recognised. Try again, a little closer to the microphone.");
    } else if (ui.autoSend.checked) {
      send(text);
    } else {
      const current = ui.input.value;
      ui.input.value = current && !/\s$/.test(current) ? `${current} ${text}` : current + text;
      inputChanged();
      ui.input.focus();
    }
  } finally {
    transcribing = false;
    setMicState("idle");
  }
}

// -- theme ------------------------------------------------------------------------------------

const darkQuery = matchMedia("(prefers-color-scheme: dark)");

function applyTheme() {
  const chosen = stored(THEME_KEY);
  const root = document.documentElement;
  if (chosen === "dark" || chosen === "light") root.dataset.theme = chosen;
  else delete root.dataset.theme;
  const dark = chosen ? chosen === "dark" : darkQuery.matches;
  root.classList.toggle("dark-theme", dark);
  ui.theme.setAttribute("aria-label", dark ? "Switch to light theme" : "Switch to dark theme");
  ui.theme.title = ui.theme.getAttribute("aria-label");
  document.querySelector('meta[name="theme-color"]').content = dark ? "#0f1116" : "#f7f7f9";
}

// -- start ------------------------------------------------------------------------------------

function start() {
  applyTheme();
  darkQuery.addEventListener("change", applyTheme);
  ui.theme.addEventListener("click", () => {
    const dark = document.documentElement.classList.contains("dark-theme");
    store(THEME_KEY, dark ? "light" : "dark");
    applyTheme();
  });

  ui.autoSend.checked = stored(AUTO_SEND_KEY) === "true";
  ui.autoSend.addEventListener("change", () => store(AUTO_SEND_KEY, String(ui.autoSend.checked)));
  ui.language.value = stored(LANGUAGE_KEY) ?? "";
  ui.language.addEventListener("change", () => store(LANGUAGE_KEY, ui.language.value || null));

  ui.form.addEventListener("submit", (e) => {
    e.preventDefault();
    submitInput();
  });
  ui.input.addEventListener("input", inputChanged);
  let lastTop = 0;
  ui.chat.addEventListener("scroll", () => {
    // Only the reader scrolling up stops the following; text growing below never does.
    const top = ui.chat.scrollTop;
    if (nearBottom()) following = true;
    else if (top < lastTop) following = false;
    lastTop = top;
  }, { passive: true });
  // Growing text, a resized window or an opened keyboard: keep the newest line in view.
  new ResizeObserver(() => following && scrollToBottom()).observe(ui.list);
  new ResizeObserver(() => following && scrollToBottom()).observe(ui.chat);
  ui.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      submitInput();
    }
  });
  ui.stop.addEventListener("click", stopTurn);
  ui.clear.addEventListener("click", clearConversation);
  ui.mic.addEventListener("click", toggleRecording);
  ui.newChat.addEventListener("click", () => {
    useSession(newSessionId(), { fresh: true });
    ui.input.focus();
  });

  // Another tab started a new chat or switched theme: follow it, so tabs stay one conversation.
  window.addEventListener("storage", (e) => {
    if (e.key === SESSION_KEY && e.newValue && e.newValue !== sessionId && SESSION_ID.test(e.newValue)) {
      useSession(e.newValue);
    } else if (e.key === THEME_KEY) {
      applyTheme();
    }
  });
  window.addEventListener("online", reconnectNow);
  window.addEventListener("offline", () => {
    if (!socketOpen()) setStatus("offline", "This device is offline");
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") reconnectNow();
  });

  let id = stored(SESSION_KEY);
  const fresh = !id || !SESSION_ID.test(id);
  if (fresh) id = newSessionId();
  inputChanged();
  useSession(id, { fresh });
}

start();
