// Server events and history applied to the conversation on screen.
//
// Every message is drawn from server events (`user_message`, `turn_started`, `chunk`, `reply`,
// `cancelled`, `interrupted`, `error`, `cleared`), whether they come over the WebSocket or over the SSE stream
// of POST /api/chat. The sending tab and every other tab take the same code path, and messages
// are keyed by their stored id, so history and live events never show one twice. A voice call's
// turns arrive the same way (its other events, such as `user_started_speaking`, are for call.js).
// `title` and `deleted` (and a finished turn) go to the listeners of onConversationEvent (the
// sidebar), and a search result's message is scrolled to and marked once history has it.
// `replaced` (an edit, or a regenerated reply) takes the replaced messages off the screen.
// `conversations` (a change to the user's list, on every socket of the user) and `connected` go
// to the listeners of onListEvent.

import {
  clearView, createEntry, removeEntry, render, renderLater, scrollToBottom, scrollToMessage, updateChrome,
} from "./render.js";
import { cancel as cancelSpeech, followReply, turnStopped } from "./speech.js";
import { FINAL, claimSent, dropSend, isMine, state } from "./state/session.js";
import { restoreDraft, showError, ui } from "./ui.js";
import { apiUrl, errorText } from "./util.js";

const listeners = [];
const listListeners = [];
let target = null; // a message id to show once it is on screen

/** Call `listener(event)` on `title`, `deleted`, and the end of a turn in this conversation. */
export function onConversationEvent(listener) {
  listeners.push(listener);
}

function tell(event) {
  for (const listener of listeners) listener(event);
}

/** Call `listener(event)` on `conversations` events and on each socket's `connected`. */
export function onListEvent(listener) {
  listListeners.push(listener);
}

/** Scroll to message `id` and mark it, now or once history brings it. */
export function showMessage(id) {
  target = id;
  revealTarget();
}

function revealTarget() {
  if (target === null) return false;
  const entry = state.messages.get(target);
  if (!entry) return false;
  target = null;
  for (const old of ui.list.querySelectorAll(".msg.hit")) old.classList.remove("hit");
  entry.el.classList.add("hit");
  entry.el.dataset.hit = "true";
  scrollToMessage(entry.el);
  return true;
}

/** Add or update a message from its wire form ({id, role, content, status, turnId, ...}). */
function upsert(wire, { live = true } = {}) {
  let entry = state.messages.get(wire.id);
  if (entry && FINAL.has(entry.status) && !FINAL.has(wire.status)) return entry; // never un-finish
  if (!entry) entry = createEntry(wire);
  entry.content = wire.content ?? "";
  entry.status = wire.status ?? "complete";
  entry.error = wire.error ?? null;
  entry.createdAt = wire.created_at ?? entry.createdAt;
  if (live) for (const touched of state.liveSince) touched.add(entry.id);
  render(entry);
  updateChrome();
  return entry;
}

function startReply(turnId, messageId, feed) {
  let entry = state.messages.get(messageId);
  if (!entry) {
    entry = upsert({ id: messageId, role: "assistant", content: "", status: "pending", turnId });
  }
  if (!FINAL.has(entry.status)) {
    entry.feed ??= feed;
    // A turn_started for a reply already on screen is a socket's catch-up: the next chunk on
    // that feed is the whole text so far, not more of it.
    if (entry.feed === feed) entry.catchUp = feed;
    state.running.set(turnId, messageId);
    updateChrome();
  }
  return entry;
}

function onChunk(event, feed) {
  const entry = state.messages.get(event.messageId) ?? startReply(event.turnId, event.messageId, feed);
  if (FINAL.has(entry.status)) return;
  // A reply fed by both the WebSocket and an SSE stream (the socket came back mid-turn) grows
  // from one of them only; the final event carries the whole text either way.
  if (entry.feed && entry.feed !== feed) return;
  entry.feed = feed;
  const text = event.text ?? "";
  entry.content = entry.catchUp === feed ? text : entry.content + text;
  entry.catchUp = null;
  for (const touched of state.liveSince) touched.add(entry.id);
  renderLater(entry);
  followReply(entry);
}

function finishReply(event) {
  const entry = event.message && event.message.id !== undefined ? upsert(event.message) : null;
  if (event.turnId) state.running.delete(event.turnId);
  updateChrome();
  if (!entry || !event.turnId) return;
  if (event.type === "cancelled" || event.type === "interrupted") turnStopped(event.turnId);
  else followReply(entry, true);
  tell(event);
}

function onUserMessage(event) {
  const ours = event.clientId !== undefined && claimSent(event.turnId, event.clientId);
  if (ours && state.draft?.clientId === event.clientId) state.draft = null;
  // Someone (here or in another tab) asked something new: the last answer stops talking.
  if (!ours && !isMine(event.turnId)) cancelSpeech();
  upsert(event.message);
}

function onReplaced(event) {
  // Message `fromMessageId` and every later one, except the new turn's own (a second feed may
  // bring this event after them).
  const from = Number(event.fromMessageId);
  if (!Number.isFinite(from)) return;
  for (const entry of [...state.messages.values()]) {
    if (entry.id >= from && entry.turnId !== event.turnId) removeEntry(entry);
  }
  for (const [turnId, id] of state.running) {
    if (!state.messages.has(id)) state.running.delete(turnId);
  }
  updateChrome();
}

function onError(event) {
  if (event.stage) return; // a voice call's provider failed: the call's own tab reports it
  if (event.message && event.message.id !== undefined) {
    finishReply(event);
  } else if (event.clientId !== undefined && dropSend(event.clientId)) {
    // The server refused a frame this tab sent: give the text back.
    if (state.draft?.clientId === event.clientId) restoreDraft();
  }
  showError(event.error?.error ?? "The server reported an error.");
}

/** Apply one server event; `feed` says where it came from ("ws" or "sse"). */
export function handleEvent(event, feed) {
  switch (event.type) {
    case "user_message":
      onUserMessage(event);
      break;
    case "turn_started":
      startReply(event.turnId, event.messageId, feed);
      break;
    case "chunk":
      onChunk(event, feed);
      break;
    case "reply":
    case "cancelled":
    case "interrupted": // the user talked over a spoken reply: it keeps what was heard
      finishReply(event);
      break;
    case "error":
      onError(event);
      break;
    case "cleared":
      cancelSpeech();
      clearView();
      break;
    case "replaced":
      onReplaced(event);
      break;
    case "conversations":
    case "connected":
      for (const listener of listListeners) listener(event);
      break;
    case "title":
    case "deleted":
      if (event.sessionId === state.sessionId) tell(event);
      break;
    case "transcription":
      // The recording tab takes its text from the HTTP answer; other tabs keep their own drafts.
      break;
    default:
      break; // `connected`, `pong`, and event types newer than this page
  }
}

/** A feed ended (socket closed, SSE answer over): its replies may grow from another one now. */
export function releaseFeed(feed) {
  for (const entry of state.messages.values()) {
    if (entry.feed === feed) entry.feed = null;
    if (entry.catchUp === feed) entry.catchUp = null;
  }
}

// -- history -----------------------------------------------------------------------------------

let historyStarted = 0;
let historyApplied = 0;

export async function loadHistory() {
  const seq = ++historyStarted;
  const forSession = state.sessionId;
  const forView = state.view;
  const touched = new Set();
  state.liveSince.add(touched);
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
    if (forView !== state.view || seq < historyApplied) return;
    historyApplied = seq;
    reconcile(Array.isArray(body.messages) ? body.messages : [], touched);
  } catch {
    // Unreachable server: the status pill says so, and the next connect loads history again.
  } finally {
    state.liveSince.delete(touched);
  }
}

function reconcile(list, touched) {
  const first = state.messages.size === 0;
  const seen = new Set();
  for (const wire of list) {
    seen.add(wire.id);
    upsert(wire, { live: false });
  }
  // Gone from the store (cleared while this tab was offline), unless live events added it since.
  for (const entry of [...state.messages.values()]) {
    if (!seen.has(entry.id) && !touched.has(entry.id) && FINAL.has(entry.status)) removeEntry(entry);
  }
  for (const [turnId, id] of state.running) {
    const entry = state.messages.get(id);
    if (!entry || FINAL.has(entry.status)) state.running.delete(turnId);
  }
  updateChrome();
  if (!revealTarget() && first) scrollToBottom();
}
