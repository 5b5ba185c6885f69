// Parley web app: one conversation per browser, shared by its tabs through the session WebSocket.
// This module wires the others together: conversation state (state/session.js), server events
// (conversation.js), the socket and HTTP fallback (connection.js), the message list (render.js),
// the microphone (recorder.js), spoken replies (speech.js), voice calls (call.js), options
// (settings.js), chrome (ui.js) and who is signed in (signin.js).

import { hangUp, initCall } from "./call.js";
import { openSession, reconnectNow, send, socketOpen, stopTurn } from "./connection.js";
import { toggleRecording } from "./recorder.js";
import { clearView, initScrolling, refreshMeta, updateChrome } from "./render.js";
import { cancel as cancelSpeech, onSpeakingChange, primeOnFirstGesture } from "./speech.js";
import { forgetDetectedLanguage, followStorage, initSettings } from "./settings.js";
import { whenSignedIn } from "./signin.js";
import {
  SESSION_KEY, forgetTurns, initialSessionId, isValidSessionId, newSessionId, state,
} from "./state/session.js";
import { THEME_KEY, applyTheme, initTheme, inputChanged, setStatus, showError, ui } from "./ui.js";
import { errorText, postJson, store } from "./util.js";

async function clearConversation() {
  try {
    const response = await postJson("api/clear", { sessionId: state.sessionId });
    if (!response.ok) {
      showError(await errorText(response));
      return;
    }
    cancelSpeech();
    clearView(); // the `cleared` event does the same; this covers a tab whose socket is down
  } catch {
    showError("Cannot reach the server: the conversation was not cleared.");
  }
}

function useSession(id, { fresh = false } = {}) {
  hangUp(); // a call belongs to the conversation it was started in
  state.draft = null;
  cancelSpeech();
  forgetTurns();
  forgetDetectedLanguage();
  clearView();
  if (fresh) store(SESSION_KEY, id);
  openSession(id);
}

function submitInput() {
  const text = ui.input.value;
  if (!text.trim()) return;
  ui.input.value = "";
  inputChanged();
  send(text);
}

function wireComposer() {
  ui.form.addEventListener("submit", (e) => {
    e.preventDefault();
    submitInput();
  });
  ui.input.addEventListener("input", inputChanged);
  ui.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      submitInput();
    }
  });
  ui.stop.addEventListener("click", stopTurn);
  ui.mic.addEventListener("click", toggleRecording);
}

function start() {
  initTheme();
  initSettings();
  initScrolling();
  wireComposer();
  primeOnFirstGesture();
  initCall();
  onSpeakingChange((messageId) => {
    refreshMeta(messageId);
    updateChrome();
  });
  ui.clear.addEventListener("click", clearConversation);
  ui.newChat.addEventListener("click", () => {
    useSession(newSessionId(), { fresh: true });
    ui.input.focus();
  });

  // Another tab started a new chat or changed a setting: follow it, so tabs stay one conversation.
  window.addEventListener("storage", (e) => {
    if (e.key === SESSION_KEY && e.newValue !== state.sessionId && isValidSessionId(e.newValue)) {
      useSession(e.newValue);
    } else if (e.key === THEME_KEY) {
      applyTheme();
    } else {
      followStorage(e.key);
    }
  });
  window.addEventListener("online", reconnectNow);
  window.addEventListener("offline", () => {
    if (!socketOpen()) setStatus("offline", "This device is offline");
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") reconnectNow();
  });

  inputChanged();
  // PARLEY_AUTH=token: the sign-in page comes first when this browser is not signed in.
  whenSignedIn().then(() => useSession(initialSessionId()));
}

start();
