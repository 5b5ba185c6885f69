// Voice calls: this tab's side of a WebRTC call to the server (GET /api/ice, POST /api/offer,
// POST /api/hangup; see web/rtc.py). GET /api/ice also says the server's mode: "direct" (below)
// or "cloudflare", where the media goes through the Cloudflare Realtime SFU (sfu.js) and the
// call's events come over the session WebSocket (`onSessionEvent`) instead of a data channel.
//
// One round trip, no trickle ICE: the browser gathers its candidates before posting the offer,
// and the answer holds all of the server's. The data channel must exist before the offer (so the
// SDP carries it); the server talks over it with JSON events (`type`), answers `ping` with
// `pong`, and ends the call on `hangup`. Turn-taking, barge-in and echo handling are the
// server's and the browser's audio processing: this module only shows what the call is doing.
// The server says which stage the call is in (`call_stage`: listening, transcribing, thinking,
// speaking) whenever it changes; the call bar shows that stage, or "You're speaking" over it.
//
// The chat view is not fed from here: the call's turns are ordinary session turns, and reach
// this tab (and every other) over the session WebSocket like a typed message does.

import { micErrorText } from "./recorder.js";
import { chosenLanguage } from "./settings.js";
import { cancel as cancelSpeech } from "./speech.js";
import { state } from "./state/session.js";
import { SfuLink } from "./sfu.js";
import { showError } from "./ui.js";
import { apiUrl, errorText, gathered, postJson } from "./util.js";

const GATHER_TIMEOUT_MS = 3_000;
const PING_EVERY_MS = 5_000;
const PONG_TIMEOUT_MS = 20_000;
const METER_FLOOR_DB = -60; // the meter's empty end; speech sits around -30..-10 dBFS

const $ = (id) => document.getElementById(id);
const view = {
  button: $("call"),
  bar: $("callbar"),
  who: $("call-who"),
  meter: $("call-meter"),
  timer: $("call-timer"),
  latency: $("call-latency"),
  mute: $("call-mute"),
  hangup: $("call-hangup"),
  you: $("call-you"),
  assistant: $("call-assistant"),
};

const WHO_LABELS = {
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  listening: "Listening",
  you: "You're speaking",
  transcribing: "Transcribing…",
  thinking: "Thinking…",
  assistant: "Parley is speaking",
};

// The server's stage -> what the call bar shows.
const STAGE_WHO = { listening: "listening", transcribing: "transcribing", thinking: "thinking", speaking: "assistant" };

// The assistant's voice: played from the remote track, never from a URL (CSP's media-src
// does not apply to srcObject).
const remoteAudio = document.createElement("audio");
remoteAudio.autoplay = true;
remoteAudio.hidden = true;
remoteAudio.dataset.testid = "call-audio";
document.body.append(remoteAudio);

/**
 * The call in progress, or null. {pc, channel, sfu, stream, callId, ended, audio: {ctx, analyser},
 * raf, timers, startedAt, lastPong, replyId, replyText, stage, userSpeaking, youText, answered}
 */
let call = null;

export function inCall() {
  return call !== null;
}

// -- starting ---------------------------------------------------------------------------------

/** {servers, mode}: fresh ICE servers (TURN credentials are short-lived) and how calls go. */
async function iceConfig() {
  try {
    const response = await fetch(apiUrl("api/ice"), { cache: "no-store" });
    if (response.ok) {
      const body = await response.json();
      if (Array.isArray(body.iceServers)) return { servers: body.iceServers, mode: body.mode ?? "direct" };
    }
  } catch {
    /* the offer below reports an unreachable server */
  }
  return { servers: [], mode: "direct" }; // host candidates still connect on the same machine or LAN
}

export async function startCall() {
  if (call) return;
  if (!navigator.mediaDevices?.getUserMedia || typeof RTCPeerConnection === "undefined") {
    showError(window.isSecureContext
      ? "This browser cannot make voice calls."
      : "Voice calls need a secure page: open Parley over https:// or on localhost.");
    return;
  }
  const current = (call = newCall());
  cancelSpeech(); // a reply being read aloud would talk over the call
  showBar(current);
  try {
    await connect(current);
  } catch (err) {
    if (current.ended) return; // hung up while connecting: nothing to report
    showError(err instanceof CallError ? err.message : `The call could not start: ${err?.message ?? err}`);
    endCall(current, { notifyServer: true });
  }
}

class CallError extends Error {}

function newCall() {
  return {
    pc: null,
    channel: null,
    sfu: null,
    stream: null,
    callId: null,
    ended: false,
    muted: false,
    audio: null,
    raf: 0,
    timers: [],
    startedAt: 0,
    lastPong: 0,
    replyId: null,
    replyText: "",
    stage: "listening", // the server's latest `call_stage`
    userSpeaking: false,
    youText: "", // transcripts since the last reply began: the server answers them as one turn
    answered: true,
  };
}

async function connect(current) {
  try {
    current.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (err) {
    throw new CallError(micErrorText(err));
  }
  if (current.ended) return;
  startMeter(current);
  const ice = await iceConfig();
  if (current.ended) return;
  if (ice.mode === "cloudflare") {
    await connectSfu(current);
    return;
  }
  const pc = (current.pc = new RTCPeerConnection({ iceServers: ice.servers }));
  // Before the offer, so the SDP carries the data channel.
  const channel = (current.channel = pc.createDataChannel("events"));
  channel.addEventListener("open", () => onChannelOpen(current));
  channel.addEventListener("message", (msg) => onMessage(current, msg.data));
  channel.addEventListener("close", () => endCall(current, { reason: "The call was ended by the server." }));
  for (const track of current.stream.getAudioTracks()) pc.addTrack(track, current.stream);
  pc.addEventListener("track", playRemote);
  pc.addEventListener("connectionstatechange", () => onConnectionState(current));

  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc, GATHER_TIMEOUT_MS);
  if (current.ended) return;
  let response;
  try {
    // Only a language the user picked: "Auto" lets speech-to-text detect it per utterance
    // (forcing one makes Whisper translate speech in another language).
    const language = chosenLanguage();
    response = await postJson("api/offer", {
      sdp: pc.localDescription.sdp,
      type: "offer",
      sessionId: state.sessionId,
      ...(language ? { language } : {}),
    });
  } catch {
    throw new CallError("Cannot reach the server: the call did not start.");
  }
  if (!response.ok) throw new CallError(`The call could not start: ${await errorText(response)}`);
  const answer = await response.json();
  current.callId = answer.callId;
  if (current.ended) {
    hangupOnServer(current.callId); // hung up while the server was answering
    return;
  }
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
}

function playRemote(e) {
  remoteAudio.srcObject = e.streams[0] ?? new MediaStream([e.track]);
  remoteAudio.play().catch((err) => {
    if (err?.name === "NotAllowedError") showError("The browser blocked the call audio: tap the page to hear it.");
  });
}

/** Cloudflare mode: publish the mic to the SFU, start the assistant, pull its voice (sfu.js). */
async function connectSfu(current) {
  const link = (current.sfu = new SfuLink({
    stream: current.stream,
    iceServers: async () => (await iceConfig()).servers,
    chatSessionId: state.sessionId,
    onTrack: playRemote,
    onCall: (callId) => {
      current.callId = callId;
    },
    onLive: () => !current.ended && onLive(current),
    onReconnecting: () => !current.ended && setWho("reconnecting"),
    onFail: (reason) => endCall(current, { notifyServer: true, reason }),
  }));
  try {
    await link.start();
  } catch (err) {
    throw new CallError(`The call could not start: ${err?.message ?? err}`);
  }
  if (current.ended) hangupOnServer(current.callId); // hung up while the server was answering
}

/** Cloudflare mode: a session event from the WebSocket; the call's own ones drive the call bar. */
export function onSessionEvent(event) {
  const current = call;
  if (!current?.sfu || current.ended) return;
  if (event.callId !== undefined && event.callId !== current.callId) return; // another tab's call
  if (event.type === "call_track") {
    current.sfu.voiceMoved(event).then((moved) => moved && !current.ended && showStage(current));
  }
  else if (event.type === "call_reconnecting") setWho("reconnecting");
  else onEvent(current, event);
}

function onChannelOpen(current) {
  if (current.ended) return;
  current.lastPong = performance.now();
  current.timers.push(setInterval(() => keepalive(current), PING_EVERY_MS));
}

function keepalive(current) {
  if (current.channel?.readyState !== "open") return;
  if (performance.now() - current.lastPong > PONG_TIMEOUT_MS) {
    endCall(current, { notifyServer: true, reason: "The call was lost: the server stopped answering." });
    return;
  }
  current.channel.send(JSON.stringify({ type: "ping" }));
}

function onConnectionState(current) {
  const pcState = current.pc?.connectionState;
  if (pcState === "connected" && !current.startedAt) {
    onLive(current);
  } else if (pcState === "failed") {
    endCall(current, { notifyServer: true, reason: "The call's connection failed." });
  } else if (pcState === "closed") {
    endCall(current);
  }
}

function onLive(current) {
  showStage(current);
  view.bar.dataset.state = "live";
  if (current.startedAt) return; // media is back after a recovery
  current.startedAt = performance.now();
  tickTimer(current);
  current.timers.push(setInterval(() => tickTimer(current), 1000));
}

// -- events from the server -------------------------------------------------------------------

function onMessage(current, data) {
  if (current.ended) return;
  let event;
  try {
    event = JSON.parse(data);
  } catch {
    return;
  }
  onEvent(current, event);
}

function onEvent(current, event) {
  switch (event.type) {
    case "pong":
      current.lastPong = performance.now();
      break;
    case "call_stage":
      current.stage = event.stage;
      showStage(current);
      break;
    case "user_started_speaking":
      current.userSpeaking = true;
      showStage(current);
      break;
    case "user_stopped_speaking":
      current.userSpeaking = false;
      showStage(current);
      break;
    case "transcript":
      if (!event.text) break; // only noise was heard
      // Speech after a pause that came back before the reply began joins the same turn.
      current.youText = current.answered ? event.text : `${current.youText} ${event.text}`;
      current.answered = false;
      setLine(view.you, current.youText);
      break;
    case "turn_started":
      current.answered = true;
      current.replyId = event.messageId;
      current.replyText = "";
      setLine(view.assistant, "");
      break;
    case "chunk":
      if (event.messageId !== current.replyId) break;
      current.replyText += event.text ?? "";
      setLine(view.assistant, current.replyText);
      break;
    case "reply":
    case "cancelled":
    case "interrupted":
      onReplyOver(current, event);
      break;
    case "metrics":
      showLatency(event);
      break;
    case "error":
      onCallError(event);
      break;
    default:
      break; // user_message, and event types newer than this page
  }
}

function onReplyOver(current, event) {
  const content = event.message?.content ?? event.response;
  if (typeof content === "string" && event.message?.id === current.replyId) {
    current.replyText = content; // a truncated event has no content: the chunks already showed it
  }
  setLine(view.assistant, current.replyText, event.type === "interrupted" ? "interrupted" : "");
}

function onCallError(event) {
  const detail = event.error?.error ?? "unknown error";
  const stage = { stt: "Speech recognition", tts: "Speech synthesis", vad: "Voice detection" }[event.stage];
  if (stage) showError(`${stage} failed: ${detail}`);
  else if (!event.message) showError(detail); // a failed turn is shown on its message
}

function showLatency(event) {
  const ms = event.ms ?? {};
  const total = ms.first_frame ?? ms.first_tts_audio;
  if (typeof total !== "number") return;
  view.latency.textContent = `reply in ${(total / 1000).toFixed(2)} s`;
  const parts = Object.entries(event.providers ?? {}).map(([k, v]) => `${k.replaceAll("_", " ")} ${Math.round(v)} ms`);
  view.latency.title = `From the end of your speech to the first reply audio${parts.length ? `; ${parts.join(", ")}` : ""}`;
  view.latency.hidden = false;
}

// -- the call bar -----------------------------------------------------------------------------

function showBar(current) {
  view.bar.hidden = false;
  view.bar.dataset.state = "connecting";
  view.bar.classList.remove("muted");
  view.latency.hidden = true;
  view.latency.textContent = "";
  view.timer.textContent = "0:00";
  setLine(view.you, "");
  setLine(view.assistant, "");
  setWho("connecting");
  setMuted(current, false);
  view.button.classList.add("in-call");
  view.button.setAttribute("aria-pressed", "true");
  view.button.setAttribute("aria-label", "End the voice call");
  view.button.title = "End the voice call";
}

function hideBar() {
  view.bar.hidden = true;
  view.bar.dataset.state = "idle";
  view.button.classList.remove("in-call");
  view.button.setAttribute("aria-pressed", "false");
  view.button.setAttribute("aria-label", "Start a voice call");
  view.button.title = "Start a voice call";
  view.meter.style.setProperty("--level", "0");
}

function setWho(who) {
  view.bar.dataset.who = who;
  view.who.textContent = WHO_LABELS[who];
}

/** The user's own speech first (the server may still be transcribing what they said before). */
function showStage(current) {
  const stage = STAGE_WHO[current.stage] ?? "listening";
  setWho(current.userSpeaking ? "you" : stage);
  view.bar.dataset.stage = current.stage;
}

function setLine(line, text, mark = "") {
  line.hidden = !text;
  line.querySelector(".call-text").textContent = text;
  line.dataset.mark = mark;
}

function tickTimer(current) {
  const s = Math.floor((performance.now() - current.startedAt) / 1000);
  view.timer.textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function setMuted(current, muted) {
  current.muted = muted;
  // A disabled track still sends (silent) frames, so the server does not take it for a lost call.
  for (const track of current.stream?.getAudioTracks() ?? []) track.enabled = !muted;
  view.bar.classList.toggle("muted", muted);
  view.mute.setAttribute("aria-pressed", String(muted));
  const label = muted ? "Unmute the microphone" : "Mute the microphone";
  view.mute.setAttribute("aria-label", label);
  view.mute.title = label;
}

function startMeter(current) {
  const Context = window.AudioContext ?? window.webkitAudioContext;
  if (!Context) return;
  try {
    const ctx = new Context();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    ctx.createMediaStreamSource(current.stream).connect(analyser);
    ctx.resume().catch(() => {});
    current.audio = { ctx, analyser, samples: new Float32Array(analyser.fftSize) };
  } catch {
    return; // no meter; the call works without it
  }
  const draw = () => {
    if (current.ended) return;
    const { analyser, samples } = current.audio;
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const x of samples) sum += x * x;
    const db = 10 * Math.log10(sum / samples.length + 1e-12);
    const level = current.muted ? 0 : Math.min(1, Math.max(0, 1 - db / METER_FLOOR_DB));
    view.meter.style.setProperty("--level", level.toFixed(3));
    current.raf = requestAnimationFrame(draw);
  };
  current.raf = requestAnimationFrame(draw);
}

// -- ending -----------------------------------------------------------------------------------

function hangupOnServer(callId) {
  if (!callId) return;
  postJson("api/hangup", { callId }).catch(() => {
    /* the server's idle timeout ends a call it cannot be told about */
  });
}

/**
 * Release everything the call holds; idempotent. `notifyServer` says hang up there too (the data
 * channel first, then POST /api/hangup in case the channel is not open); `reason` is shown.
 */
function endCall(current, { notifyServer = false, reason = "" } = {}) {
  if (current.ended) return;
  current.ended = true;
  if (notifyServer) {
    try {
      if (current.channel?.readyState === "open") current.channel.send(JSON.stringify({ type: "hangup" }));
    } catch {
      /* closing already */
    }
    hangupOnServer(current.callId);
  }
  for (const timer of current.timers) clearInterval(timer);
  cancelAnimationFrame(current.raf);
  current.audio?.ctx.close().catch(() => {});
  current.sfu?.close();
  for (const track of current.stream?.getTracks() ?? []) track.stop();
  try {
    current.pc?.close();
  } catch {
    /* closed */
  }
  remoteAudio.srcObject = null;
  if (call === current) {
    call = null;
    hideBar();
  }
  if (reason) showError(reason);
}

/** The hang-up button (and a session change): end the call here and on the server. */
export function hangUp() {
  if (call) endCall(call, { notifyServer: true });
}

export function toggleCall() {
  if (call) hangUp();
  else startCall();
}

export function initCall() {
  view.button.addEventListener("click", toggleCall);
  view.hangup.addEventListener("click", hangUp);
  view.mute.addEventListener("click", () => call && setMuted(call, !call.muted));
  // Closing the tab: tell the server now rather than leaving it to the idle timeout.
  window.addEventListener("pagehide", () => {
    if (!call) return;
    const callId = call.callId;
    endCall(call);
    if (callId) {
      navigator.sendBeacon?.(apiUrl("api/hangup"), new Blob([JSON.stringify({ callId })], { type: "application/json" }));
    }
  });
}
