// Spoken replies: read-aloud on a finished reply, and auto-speak of this tab's live replies.
//
// One Speaker at a time may make sound. It takes text piece by piece, asks POST /api/speak for
// each piece as soon as it has it (a few ahead of the one playing), and plays the clips strictly
// in order through one <audio> element. Auto-speak feeds a Speaker the growing reply, so the
// first sentence plays while the model is still writing the rest. Cancelling aborts the
// requests in flight, drops the queue and silences that turn for good.

import { SentenceSplitter, speakableChunks } from "./sentences.js";
import { isMine, turnLanguage } from "./state/session.js";
import { autoSpeak, effectiveLanguage, onAutoSpeakChange, setAutoSpeak } from "./settings.js";
import { showError } from "./ui.js";
import { errorBody, postJson } from "./util.js";

// Clips requested but not yet played; enough to hide the latency of the next request.
const FETCH_AHEAD = 4;
const FORMAT = "wav"; // no encoding on the server: the lowest latency, and every browser plays it

const audio = document.createElement("audio");
audio.preload = "auto";
audio.hidden = true;
audio.dataset.testid = "speech-audio";
document.body.append(audio);

let current = null; // the Speaker making sound (or about to)
const silenced = new Set(); // turns whose speech was cancelled: later chunks must not restart it
let unavailableShown = false;
const voiceNoted = new Set(); // languages whose fallback voice was already announced

// Piper voices are named like "en_US-joe-medium": when the picked language has no voice here,
// the server speaks with the one it has, and the user is told once per language.
function noteVoice(voice, language) {
  if (!voice || !language || voiceNoted.has(language)) return;
  const spoken = voice.split(/[_-]/)[0].toLowerCase();
  const wanted = language.split(/[_-]/)[0].toLowerCase();
  if (/^[a-z]{2,3}$/.test(spoken) && spoken !== wanted) {
    voiceNoted.add(language);
    showError(`No voice for "${language}" is installed here: replies are read by ${voice}.`);
  }
}
const listeners = [];

class Speaker {
  constructor({ messageId, turnId, language, auto }) {
    this.messageId = messageId;
    this.turnId = turnId;
    this.language = language;
    this.auto = auto;
    this.splitter = new SentenceSplitter();
    this.clips = []; // {text, state: "queued"|"fetching"|"ready"|"failed", url}
    this.playing = -1; // index of the clip in the <audio> element
    this.ended = false; // no more text is coming
    this.aborter = new AbortController();
  }

  /** The reply's whole text so far; `final` when the turn is over. */
  feed(text, final) {
    for (const piece of this.splitter.push(text, final)) this.clips.push({ text: piece, state: "queued" });
    if (final) this.ended = true;
    this.pump();
  }

  /** Whole text at once: bigger pieces, fewer requests. */
  say(text) {
    for (const piece of speakableChunks(text)) this.clips.push({ text: piece, state: "queued" });
    this.ended = true;
    this.pump();
  }

  pump() {
    if (current !== this) return;
    const from = this.playing + 1;
    let ahead = 0;
    for (let i = from; i < this.clips.length && ahead < FETCH_AHEAD; i++) {
      const clip = this.clips[i];
      if (clip.state === "queued") this.fetch(clip);
      if (clip.state !== "failed") ahead++;
    }
    const audioBusy = this.playing >= 0 && !audio.paused && !audio.ended;
    if (audioBusy) return;
    let next = from;
    while (next < this.clips.length && this.clips[next].state === "failed") next++;
    if (next < this.clips.length) {
      if (this.clips[next].state === "ready") this.play(next);
    } else if (this.ended) {
      finish(this);
    }
  }

  async fetch(clip) {
    clip.state = "fetching";
    const body = { text: clip.text, format: FORMAT };
    if (this.language) body.language = this.language;
    let response;
    try {
      response = await postJson("api/speak", body, { signal: this.aborter.signal });
      if (!response.ok) {
        this.refused(await errorBody(response), response.status);
        return;
      }
      noteVoice(response.headers.get("X-TTS-Voice"), this.language);
      const blob = await response.blob();
      if (current !== this) return;
      clip.url = URL.createObjectURL(blob);
      clip.state = "ready";
    } catch (err) {
      if (err?.name === "AbortError") return;
      clip.state = "failed";
      showError("Cannot reach the server to speak the reply.");
      cancel();
      return;
    }
    this.pump();
  }

  refused(body, status) {
    if (current !== this) return;
    if (status === 503 && body.code === "not_configured") {
      if (this.auto) setAutoSpeak(false);
      if (!this.auto || !unavailableShown) {
        showError(`Spoken replies are off: ${body.error}`);
      }
      unavailableShown = true;
    } else {
      showError(`Could not speak the reply: ${body.error}`);
    }
    cancel();
  }

  play(index) {
    this.playing = index;
    audio.src = this.clips[index].url;
    audio.play().catch((err) => {
      if (current !== this || err?.name === "AbortError") return;
      showError(err?.name === "NotAllowedError"
        ? "The browser blocked audio: press the reply's read-aloud button to listen."
        : `Could not play the audio: ${err?.message ?? err}`);
      cancel();
    });
  }

  clipEnded() {
    const clip = this.clips[this.playing];
    if (clip?.url) URL.revokeObjectURL(clip.url);
    if (clip) clip.url = null;
    this.pump();
  }

  release() {
    this.aborter.abort();
    for (const clip of this.clips) if (clip.url) URL.revokeObjectURL(clip.url);
    this.clips = [];
  }
}

audio.addEventListener("ended", () => current?.clipEnded());
audio.addEventListener("error", () => {
  // A clip the browser cannot decode: skip it rather than stall the rest.
  if (current && current.playing >= 0 && audio.getAttribute("src")) current.clipEnded();
});

function notify(messageId) {
  for (const listener of listeners) listener(messageId);
}

function start(speaker) {
  cancel();
  current = speaker;
  notify(speaker.messageId);
  return speaker;
}

function finish(speaker) {
  if (current !== speaker) return;
  current = null;
  speaker.release();
  audio.removeAttribute("src");
  notify(speaker.messageId);
}

// -- public API -------------------------------------------------------------------------------

/** A short silent WAV, to play once inside a user gesture. */
function silence() {
  const samples = 400; // 50 ms at 8 kHz
  const view = new DataView(new ArrayBuffer(44 + samples * 2));
  const text = (offset, value) => [...value].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + samples * 2, true);
  text(8, "WAVEfmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, 8000, true);
  view.setUint32(28, 16000, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, samples * 2, true);
  return new Blob([view.buffer], { type: "audio/wav" });
}

/**
 * Safari lets an <audio> element play from script only after it once played inside a user
 * gesture. Auto-speak starts when a reply arrives, long after the click on Send, so the
 * first tap or key press anywhere plays a moment of silence through it.
 */
export function primeOnFirstGesture() {
  const prime = () => {
    window.removeEventListener("pointerdown", prime, true);
    window.removeEventListener("keydown", prime, true);
    if (current) return; // already playing: nothing to unlock
    const url = URL.createObjectURL(silence());
    audio.src = url;
    audio.play().catch(() => {}).finally(() => {
      URL.revokeObjectURL(url);
      if (!current && audio.getAttribute("src") === url) audio.removeAttribute("src");
    });
  };
  window.addEventListener("pointerdown", prime, true);
  window.addEventListener("keydown", prime, true);
}

/** Call `listener(messageId)` when a message starts or stops being spoken. */
export function onSpeakingChange(listener) {
  listeners.push(listener);
}

export function isSpeaking(messageId) {
  return current !== null && current.messageId === messageId;
}

export function speaking() {
  return current !== null;
}

/** Stop all speech now: the queue is dropped and the turn being spoken stays silent. */
export function cancel() {
  const speaker = current;
  if (!speaker) return;
  if (speaker.turnId) silenced.add(speaker.turnId);
  current = null;
  speaker.release();
  audio.pause();
  audio.removeAttribute("src");
  audio.load(); // drops the buffered clip, so nothing more sounds
  notify(speaker.messageId);
}

/** The read-aloud button: speak a finished reply, or stop it if it is the one speaking. */
export function toggleReadAloud(entry) {
  if (isSpeaking(entry.id)) {
    cancel();
    return;
  }
  const language = (entry.turnId && turnLanguage(entry.turnId)) || effectiveLanguage();
  start(new Speaker({ messageId: entry.id, turnId: null, language, auto: false })).say(entry.content);
}

/**
 * A live reply grew (or ended, with `final`): speak it if it is this tab's turn and
 * auto-speak is on. Replies from history never come here.
 */
export function followReply(entry, final = false) {
  if (current?.turnId === entry.turnId && current.auto) {
    current.feed(entry.content, final);
    return;
  }
  if (!autoSpeak() || !entry.turnId || !isMine(entry.turnId) || silenced.has(entry.turnId)) return;
  if (!entry.content && !final) return;
  const language = turnLanguage(entry.turnId) || effectiveLanguage();
  start(new Speaker({ messageId: entry.id, turnId: entry.turnId, language, auto: true }))
    .feed(entry.content, final);
}

/** A turn was stopped (here or in another tab): its speech stops too. */
export function turnStopped(turnId) {
  if (current?.turnId === turnId) cancel();
  silenced.add(turnId);
}

onAutoSpeakChange((on) => {
  if (!on && current?.auto) cancel();
});
