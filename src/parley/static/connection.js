// Talking to the server: the session WebSocket (with keepalive and reconnect), and plain HTTP
// (POST /api/chat answered as SSE) whenever the socket is down.

import { onSessionEvent } from "./call.js";
import { handleEvent, loadHistory, releaseFeed } from "./conversation.js";
import { scrollToBottom, updateChrome } from "./render.js";
import { cancel as cancelSpeech } from "./speech.js";
import { claimTurn, dropSend, noteSend, state } from "./state/session.js";
import { effectiveLanguage } from "./settings.js";
import { restoreDraft, setStatus, showError } from "./ui.js";
import { apiUrl, errorText, postJson } from "./util.js";

const PING_EVERY_MS = 25_000;
const PONG_TIMEOUT_MS = 10_000;
const CONNECT_TIMEOUT_MS = 10_000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
const OFFLINE_AFTER_ATTEMPTS = 4;

let socket = null;
let socketGen = 0;
let attempts = 0;
let everConnected = false;
let reconnectTimer = 0;
let pingTimer = 0;
let pongTimer = 0;
let openTimer = 0;
// The id of the last bus event this tab saw of `state.sessionId`: a socket that reconnects asks for
// what came after it, and the server replays it (no history reload), or says it no longer can.
let lastEventId = "";

export function socketOpen() {
  return socket !== null && socket.readyState === WebSocket.OPEN;
}

function connect() {
  clearTimeout(reconnectTimer);
  const gen = ++socketGen;
  const url = apiUrl("ws");
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("sessionId", state.sessionId);
  if (lastEventId) url.searchParams.set("after", lastEventId);
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
    // The user's list events are not the session's: resuming goes by the session's own ids.
    if (event.eventId && event.type !== "conversations") lastEventId = event.eventId;
    if (event.type === "connected") {
      onConnected(event);
      handleEvent(event, "ws");
    } else {
      handleEvent(event, "ws");
      onSessionEvent(event);
    }
  });
  ws.addEventListener("close", () => {
    if (gen !== socketGen) return;
    dropSocket();
  });
}

function onConnected(event) {
  attempts = 0;
  everConnected = true;
  setStatus("connected", "Live: messages from other tabs and devices appear here");
  startKeepalive();
  // A resumed socket gets what it missed as events. Otherwise whatever happened while it was away
  // (or before it subscribed) comes from history; a reply still being written comes from the
  // catch-up events that follow `connected`.
  if (event.resumed !== true) loadHistory();
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
  releaseFeed("ws");
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

export function reconnectNow() {
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

/** Show session `id` from scratch: a new socket, then its history. */
export function openSession(id) {
  state.sessionId = id;
  lastEventId = "";
  socketGen++;
  if (socket) socket.close(1000, "session changed");
  socket = null;
  stopKeepalive();
  everConnected = false;
  attempts = 0;
  loadHistory();
  connect();
}

// -- sending ----------------------------------------------------------------------------------

/** Send `text` as a turn; with `editOf` (an earlier user message's id) it runs in that one's place. */
export async function send(text, { editOf = null } = {}) {
  if (!text.trim()) return;
  cancelSpeech(); // a new question: the last answer stops talking at once
  const language = effectiveLanguage();
  const clientId = noteSend(text, language);
  scrollToBottom();
  if (socketOpen()) {
    const frame = { type: "chat", message: text, clientId };
    if (language) frame.language = language;
    if (editOf !== null) frame.editOf = editOf;
    socket.send(JSON.stringify(frame));
    return;
  }
  dropSend(clientId); // over HTTP the answer itself says whose turn it is
  await sendOverHttp(text, language, editOf);
}

async function sendOverHttp(text, language, editOf) {
  state.httpTurns++;
  updateChrome();
  let finished = false;
  try {
    let response;
    try {
      const body = { message: text, sessionId: state.sessionId, stream: true };
      if (language) body.language = language;
      if (editOf !== null) body.editOf = editOf;
      response = await postJson("api/chat", body, {
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
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
    state.draft = null;
    claimTurn(response.headers.get("X-Turn-Id"), language);
    await readEvents(response.body, (event) => {
      handleEvent(event, "sse");
      if (["reply", "cancelled", "error"].includes(event.type)) finished = true;
    });
    if (!finished) {
      showError("The connection dropped while the reply was written; it will appear once reconnected.");
    } else if (editOf !== null) {
      loadHistory(); // the replaced messages leave the screen (their event goes to sockets)
    }
  } catch {
    if (!finished) showError("The connection dropped while the reply was written.");
  } finally {
    state.httpTurns--;
    releaseFeed("sse");
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

/** The stop button: silence speech now, and stop the reply being written, if any. */
export async function stopTurn() {
  cancelSpeech();
  if (state.running.size === 0 && state.httpTurns === 0) return;
  if (socketOpen()) {
    socket.send(JSON.stringify({ type: "stop" }));
    return;
  }
  try {
    const response = await postJson("api/stop", { sessionId: state.sessionId });
    if (!response.ok) showError(await errorText(response));
  } catch {
    showError("Cannot reach the server to stop the reply.");
  }
}
