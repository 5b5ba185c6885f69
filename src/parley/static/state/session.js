// The state of this tab's conversation: which session it shows, the messages on screen, the
// turns in progress, and which turns this tab sent (only those are spoken aloud here).

import { randomId, store, stored } from "../util.js";

export const SESSION_KEY = "chatSessionId"; // the seed client's key: tabs (and the seed client) share it
const SESSION_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

export const FINAL = new Set(["complete", "cancelled", "interrupted", "failed"]);

export const state = {
  sessionId: null,
  /** id -> {id, role, turnId, content, status, error, createdAt, el, body, meta, feed, catchUp} */
  messages: new Map(),
  /** turnId -> assistant message id, for turns that started and have not finished */
  running: new Map(),
  /** one Set per history load in flight: ids that live events touched meanwhile */
  liveSince: new Set(),
  /** POSTs to /api/chat whose SSE answer is still open */
  httpTurns: 0,
  /** bumped whenever the conversation on screen is emptied: older answers no longer apply */
  view: 0,
  /** {text, clientId}: the last message sent, until the server confirms or refuses it */
  draft: null,
};

// clientId -> {language} for sends the server has not answered yet; turnId -> {language} once it has.
const sent = new Map();
const mine = new Map();

export function isValidSessionId(id) {
  return typeof id === "string" && SESSION_ID.test(id);
}

export function newSessionId() {
  return `session-${randomId(12)}`;
}

/** The stored session id, or a new one (saved) when there is none or it is malformed. */
export function initialSessionId() {
  const saved = stored(SESSION_KEY);
  if (isValidSessionId(saved)) return saved;
  const id = newSessionId();
  store(SESSION_KEY, id);
  return id;
}

/** Note a send from this tab; returns the clientId the server will echo. */
export function noteSend(text, language) {
  const clientId = randomId(16);
  sent.set(clientId, { language });
  state.draft = { text, clientId };
  return clientId;
}

/** The server accepted a send (its user_message echoed the clientId): the turn is this tab's. */
export function claimSent(turnId, clientId) {
  const info = sent.get(clientId);
  if (!info || !turnId) return false;
  sent.delete(clientId);
  mine.set(turnId, info);
  return true;
}

/** A turn this tab started over HTTP (its id came in the X-Turn-Id header). */
export function claimTurn(turnId, language) {
  if (turnId) mine.set(turnId, { language });
}

/** The server refused a send: forget it; true when it was this tab's. */
export function dropSend(clientId) {
  return sent.delete(clientId);
}

export function isMine(turnId) {
  return mine.has(turnId);
}

/** The language a turn of this tab was sent with (null for "let the model choose"). */
export function turnLanguage(turnId) {
  return mine.get(turnId)?.language ?? null;
}

export function forgetTurns() {
  sent.clear();
  mine.clear();
}
