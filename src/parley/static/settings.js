// The composer's options, remembered per browser: auto-send voice, speak replies, language.
//
// The language is a code ("de") or "" for Auto. In Auto, the language speech-to-text last
// detected in this tab stands in, so a spoken German question gets a German reply, read by a
// German voice.

import { store, stored } from "./util.js";
import { ui } from "./ui.js";

const AUTO_SEND_KEY = "parleyAutoSend";
const AUTO_SPEAK_KEY = "parleyAutoSpeak";
const LANGUAGE_KEY = "parleyLanguage";

let detected = null;
const autoSpeakListeners = [];

export function autoSend() {
  return ui.autoSend.checked;
}

export function autoSpeak() {
  return ui.autoSpeak.checked;
}

export function setAutoSpeak(on) {
  if (ui.autoSpeak.checked === on) return;
  ui.autoSpeak.checked = on;
  autoSpeakChanged();
}

/** Call `listener(on)` whenever auto-speak is switched (by the user or by setAutoSpeak). */
export function onAutoSpeakChange(listener) {
  autoSpeakListeners.push(listener);
}

/** The language the user picked, or "" for Auto. */
export function chosenLanguage() {
  return ui.language.value;
}

/** What goes with a send and with speech: the chosen language, else the last detected one. */
export function effectiveLanguage() {
  return ui.language.value || detected || null;
}

/** Speech-to-text recognised `code` (or could not tell: null, which keeps the last one). */
export function noteDetectedLanguage(code) {
  if (typeof code === "string" && code) detected = code;
}

/** A new conversation forgets what the last one was spoken in. */
export function forgetDetectedLanguage() {
  detected = null;
}

function autoSpeakChanged() {
  store(AUTO_SPEAK_KEY, String(ui.autoSpeak.checked));
  for (const listener of autoSpeakListeners) listener(ui.autoSpeak.checked);
}

function restoreLanguage() {
  const saved = stored(LANGUAGE_KEY) ?? "";
  // A code this page no longer lists would leave the select blank: fall back to Auto.
  ui.language.value = [...ui.language.options].some((o) => o.value === saved) ? saved : "";
}

export function initSettings() {
  ui.autoSend.checked = stored(AUTO_SEND_KEY) === "true";
  ui.autoSend.addEventListener("change", () => store(AUTO_SEND_KEY, String(ui.autoSend.checked)));
  ui.autoSpeak.checked = stored(AUTO_SPEAK_KEY) === "true";
  ui.autoSpeak.addEventListener("change", autoSpeakChanged);
  restoreLanguage();
  ui.language.addEventListener("change", () => store(LANGUAGE_KEY, ui.language.value || null));
}

/** Another tab changed an option: follow it (returns true when `key` was one of ours). */
export function followStorage(key) {
  if (key === AUTO_SEND_KEY) ui.autoSend.checked = stored(AUTO_SEND_KEY) === "true";
  else if (key === LANGUAGE_KEY) restoreLanguage();
  else if (key === AUTO_SPEAK_KEY) {
    const on = stored(AUTO_SPEAK_KEY) === "true";
    if (on !== ui.autoSpeak.checked) {
      ui.autoSpeak.checked = on;
      for (const listener of autoSpeakListeners) listener(on);
    }
  } else return false;
  return true;
}
