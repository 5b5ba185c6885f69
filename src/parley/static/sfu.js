// Cloudflare mode: this tab's media path of a voice call through the Cloudflare Realtime SFU,
// by way of Parley's /api/sfu endpoints (web/sfu.py), which add the app secret and lock each SFU
// session to the tab that made it (the `token` sent back in X-Parley-Token).
//
// One attempt = one SFU session + one RTCPeerConnection:
//   offer (sendonly mic) -> sessions/new -> tracks/new local (answer) -> connected
//   -> the mic has sent bytes (pullers must not hear of a track before it carries media)
//   -> POST /api/sfu/calls (the first time; the assistant pulls the mic and publishes its voice)
//      or PUT /api/sfu/calls/{id}/mic (after a recovery: the assistant re-pulls)
//   -> tracks/new remote voice (the SFU's offer) -> answer -> renegotiate
//
// Recovery as Cloudflare's own clients do it: no ICE restart in place. On connection `failed` or
// `closed`, or ICE `disconnected` for more than 7 s, the attempt is dropped and a new one starts
// (fresh ICE servers, new session, re-push, re-pull) after a backoff. Each session's requests run
// one at a time (FIFO); attempts are numbered and what an old attempt's request brings back late
// is ignored. When the assistant's side moves (its own recovery), the server says so with a
// `call_track` event and this tab re-pulls the voice from its new session.

import { apiUrl, errorBody, gathered } from "./util.js";

const MIC_TRACK = "user-mic";
const STEP_TIMEOUT_MS = 10_000;
const GATHER_TIMEOUT_MS = 3_000;
const DISCONNECTED_GRACE_MS = 7_000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 5_000;
const MAX_FAILURES = 6;
const NOT_YET = new Set(["not_found_track_error", "empty_track_error"]);

export class SfuError extends Error {
  constructor(message, { status = 0, code = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

class Stale extends Error {}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolve when `check()` holds (polled), or reject after `ms`. */
async function until(check, ms, what) {
  const deadline = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > deadline) throw new SfuError(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

async function bytesSent(sender) {
  const stats = await sender.getStats();
  for (const report of stats.values()) {
    if (report.type === "outbound-rtp" && report.bytesSent > 0) return true;
  }
  return false;
}

/** Per-item errors of a tracks reply (HTTP 200 does not mean every track worked). */
function failedItems(reply) {
  return (reply.tracks ?? []).filter((t) => t.errorCode);
}

export class SfuLink {
  /**
   * @param {object} o
   * @param {MediaStream} o.stream the microphone
   * @param {() => Promise<RTCIceServer[]>} o.iceServers fresh servers for each attempt
   * @param {string} o.chatSessionId the conversation the call belongs to
   * @param {(e: RTCTrackEvent) => void} o.onTrack the assistant's voice arrived
   * @param {(callId: string) => void} o.onCall the server started the call
   * @param {() => void} o.onLive media flows (first time and after each recovery)
   * @param {(attempt: number) => void} o.onReconnecting
   * @param {(reason: string) => void} o.onFail recovery gave up
   */
  constructor(o) {
    this.o = o;
    this.callId = null;
    this.callToken = null;
    this.voice = null; // {sfuSessionId, trackName}: where the assistant publishes
    this.attempt = null;
    this.number = 0;
    this.closed = false;
    this.recovering = false;
  }

  /** The first attempt; rejects when it fails (the caller shows why). */
  async start() {
    await this.#connect(this.#newAttempt());
    this.o.onLive();
  }

  /** The assistant's voice moved to another SFU session (`call_track` event): pull it there. */
  /** Resolves true once the voice is pulled from its new place. */
  voiceMoved(event) {
    if (this.closed || event.callId !== this.callId) return Promise.resolve(false);
    this.voice = { sfuSessionId: event.sfuSessionId, trackName: event.trackName };
    const attempt = this.attempt;
    if (!attempt?.live) return Promise.resolve(false); // the attempt being built pulls this.voice
    return this.#queue(attempt, async () => {
      if (attempt.pulledMid) {
        await this.#call(attempt, "PUT", "tracks/close", { tracks: [{ mid: attempt.pulledMid }], force: true }).catch(() => {});
        attempt.pulledMid = null;
      }
      await this.#pull(attempt);
      return true;
    }).catch((err) => {
      if (!(err instanceof Stale)) this.#broken(attempt, `re-pull failed: ${err.message}`);
      return false;
    });
  }

  close() {
    this.closed = true;
    this.#drop(this.attempt);
    this.attempt = null;
  }

  // -- an attempt -----------------------------------------------------------------------------

  #newAttempt() {
    const attempt = { number: ++this.number, pc: null, sid: null, token: null, fifo: Promise.resolve(), live: false, pulledMid: null, graceTimer: 0 };
    this.attempt = attempt;
    return attempt;
  }

  #check(attempt) {
    if (this.closed || attempt !== this.attempt) throw new Stale();
  }

  async #connect(attempt) {
    const { stream, iceServers, chatSessionId, onTrack, onCall } = this.o;
    const servers = await iceServers();
    this.#check(attempt);
    const pc = (attempt.pc = new RTCPeerConnection({ iceServers: servers, bundlePolicy: "max-bundle" }));
    pc.addEventListener("track", (e) => attempt === this.attempt && onTrack(e));
    pc.addEventListener("connectionstatechange", () => this.#watch(attempt));
    pc.addEventListener("iceconnectionstatechange", () => this.#watch(attempt));
    const mic = pc.addTransceiver(stream.getAudioTracks()[0], { direction: "sendonly" });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, GATHER_TIMEOUT_MS);
    this.#check(attempt);
    const session = await this.#fetch(attempt, "POST", "api/sfu/sessions/new");
    attempt.sid = session.sessionId;
    attempt.token = session.token;
    const pushed = await this.#queue(attempt, () =>
      this.#call(attempt, "POST", "tracks/new", {
        sessionDescription: { type: "offer", sdp: pc.localDescription.sdp },
        tracks: [{ location: "local", mid: mic.mid, trackName: MIC_TRACK }],
      }),
    );
    const failed = failedItems(pushed);
    if (failed.length) throw new SfuError(`the SFU refused the microphone: ${failed[0].errorDescription ?? failed[0].errorCode}`);
    await pc.setRemoteDescription(pushed.sessionDescription);
    await until(() => pc.connectionState === "connected", STEP_TIMEOUT_MS, "the SFU connection");
    this.#check(attempt);
    await until(() => bytesSent(mic.sender), STEP_TIMEOUT_MS, "the microphone's first packets");
    this.#check(attempt);
    const headers = { "X-Parley-Token": attempt.token };
    const where = { sfuSessionId: attempt.sid, trackName: MIC_TRACK };
    if (this.callId === null) {
      const call = await this.#fetch(attempt, "POST", "api/sfu/calls", { sessionId: chatSessionId, ...where }, headers);
      this.callId = call.callId;
      this.callToken = call.callToken;
      this.voice = { sfuSessionId: call.sfuSessionId, trackName: call.trackName };
      onCall(call.callId);
    } else {
      const moved = await this.#fetch(attempt, "PUT", `api/sfu/calls/${encodeURIComponent(this.callId)}/mic`, where, {
        ...headers,
        "X-Parley-Call-Token": this.callToken,
      });
      if (moved.voice) this.voice = moved.voice;
    }
    await this.#queue(attempt, () => this.#pull(attempt));
    attempt.live = true;
  }

  /** Pull the assistant's voice into this attempt's session (inside the session's FIFO). */
  async #pull(attempt) {
    const pc = attempt.pc;
    const deadline = performance.now() + STEP_TIMEOUT_MS;
    let reply;
    for (let delay = 100; ; delay = Math.min(delay * 2, 1000)) {
      const voice = this.voice;
      reply = await this.#call(attempt, "POST", "tracks/new", {
        tracks: [{ location: "remote", sessionId: voice.sfuSessionId, trackName: voice.trackName }],
      });
      const failed = failedItems(reply);
      if (!failed.length) break;
      if (!failed.every((t) => NOT_YET.has(t.errorCode)) || performance.now() + delay > deadline) {
        throw new SfuError(`the assistant's voice could not be pulled: ${failed[0].errorCode}`);
      }
      await sleep(delay);
      this.#check(attempt);
    }
    if (reply.requiresImmediateRenegotiation) {
      await pc.setRemoteDescription(reply.sessionDescription);
      await pc.setLocalDescription(await pc.createAnswer());
      this.#check(attempt);
      await this.#call(attempt, "PUT", "renegotiate", {
        sessionDescription: { type: "answer", sdp: pc.localDescription.sdp },
      });
    }
    attempt.pulledMid = reply.tracks?.[0]?.mid ?? null;
  }

  // -- requests -------------------------------------------------------------------------------

  /** Run `op` after every earlier request of this attempt's session (one SDP state machine). */
  #queue(attempt, op) {
    const run = attempt.fifo.then(() => {
      this.#check(attempt);
      return op();
    });
    attempt.fifo = run.catch(() => {});
    return run;
  }

  #call(attempt, method, path, body) {
    return this.#fetch(attempt, method, `api/sfu/sessions/${encodeURIComponent(attempt.sid)}/${path}`, body, {
      "X-Parley-Token": attempt.token,
    });
  }

  async #fetch(attempt, method, path, body, headers = {}) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), STEP_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(apiUrl(path), {
        method,
        headers: body === undefined ? headers : { "Content-Type": "application/json", ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: controller.signal,
        cache: "no-store",
      });
    } catch (err) {
      this.#check(attempt);
      throw new SfuError(err?.name === "AbortError" ? "the server did not answer in time" : "cannot reach the server");
    } finally {
      clearTimeout(timer);
    }
    this.#check(attempt); // a late reply of an attempt that was replaced
    if (!response.ok) {
      const err = await errorBody(response);
      throw new SfuError(err.error, { status: response.status, code: err.code });
    }
    return response.json();
  }

  // -- watching and recovering ----------------------------------------------------------------

  #watch(attempt) {
    const pc = attempt.pc;
    if (!pc || attempt !== this.attempt || this.closed) return;
    if (pc.connectionState === "failed" || pc.connectionState === "closed" || pc.iceConnectionState === "failed") {
      this.#broken(attempt, `connection ${pc.connectionState}`);
    } else if (pc.iceConnectionState === "disconnected") {
      clearTimeout(attempt.graceTimer);
      attempt.graceTimer = setTimeout(() => {
        if (pc.iceConnectionState === "disconnected") this.#broken(attempt, "connection lost");
      }, DISCONNECTED_GRACE_MS);
    } else {
      clearTimeout(attempt.graceTimer);
    }
  }

  #broken(attempt, reason) {
    if (this.closed || attempt !== this.attempt || this.recovering || !attempt.live) return;
    this.#recover(reason);
  }

  async #recover(reason) {
    this.recovering = true;
    try {
      for (let failures = 0; failures < MAX_FAILURES && !this.closed; failures++) {
        this.#drop(this.attempt);
        const attempt = this.#newAttempt();
        this.o.onReconnecting(attempt.number);
        const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** failures);
        await sleep(ceiling / 2 + Math.random() * (ceiling / 2));
        try {
          this.#check(attempt);
          await this.#connect(attempt);
          this.o.onLive();
          return;
        } catch (err) {
          if (err instanceof Stale) return;
          reason = err.message;
          if (err.status === 404 && this.callId) break; // the server ended the call meanwhile
        }
      }
      if (!this.closed) this.o.onFail(`The call's connection could not be restored: ${reason}`);
    } finally {
      this.recovering = false;
    }
  }

  #drop(attempt) {
    if (!attempt) return;
    clearTimeout(attempt.graceTimer);
    attempt.live = false;
    try {
      attempt.pc?.close();
    } catch {
      /* closed */
    }
  }
}
