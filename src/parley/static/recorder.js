// Voice input: record from the microphone, POST /api/transcribe, then fill the input or send.

import { send } from "./connection.js";
import { autoSend, chosenLanguage, noteDetectedLanguage } from "./settings.js";
import { state } from "./state/session.js";
import { inputChanged, showError, ui } from "./ui.js";
import { apiUrl, errorText } from "./util.js";

const MAX_RECORDING_MS = 120_000;
const RECORDING_TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4", "audio/webm"];

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

export function micErrorText(err) {
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

function setMicState(micState) {
  const mic = ui.mic;
  mic.classList.toggle("recording", micState === "recording");
  mic.classList.toggle("busy", micState === "transcribing");
  mic.setAttribute("aria-pressed", String(micState === "recording"));
  mic.disabled = micState === "transcribing";
  const label = {
    idle: "Record a voice message",
    recording: "Stop recording",
    transcribing: "Transcribing…",
  }[micState];
  mic.setAttribute("aria-label", label);
  mic.title = label;
  // Said once per change for screen readers; the ticking timer is only in the placeholder.
  ui.recording.textContent = { idle: "", recording: "Recording", transcribing: "Transcribing" }[micState];
  ui.input.placeholder = micState === "transcribing" ? "Transcribing…" : PLACEHOLDER;
}

/** The mic button: start recording, or stop and transcribe. */
export async function toggleRecording() {
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
    form.append("sessionId", state.sessionId);
    if (chosenLanguage()) form.append("language", chosenLanguage());
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
    const body = await response.json();
    noteDetectedLanguage(body.language);
    const text = String(body.text ?? "").trim();
    if (!text) {
      showError("No speech was recognised. Try again, a little closer to the microphone.");
    } else if (autoSend()) {
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
