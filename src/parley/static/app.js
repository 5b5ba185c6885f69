// Parley web app: each tab shows the conversation its address names (/c/<id>), live through the
// session WebSocket, with the user's other conversations in a sidebar.
// This module wires the others together: conversation state (state/session.js), which one is open
// (router.js), server events (conversation.js), the socket and HTTP fallback (connection.js), the
// message list (render.js), the list of conversations (sidebar.js) and search (search.js), the
// microphone (recorder.js), spoken replies (speech.js), voice calls (call.js), options
// (settings.js), chrome (ui.js) and who is signed in (signin.js).

import { hangUp, initCall } from "./call.js";
import { openSession, reconnectNow, send, socketOpen, stopTurn } from "./connection.js";
import { toggleRecording } from "./recorder.js";
import { onConversationEvent, showMessage } from "./conversation.js";
import { clearView, initScrolling, refreshMeta, updateChrome } from "./render.js";
import { initialSession, messageFromUrl, onNavigate, showInUrl } from "./router.js";
import { initSearch } from "./search.js";
import { confirmAction, followEvent, initSidebar, markCurrent, refresh } from "./sidebar.js";
import { cancel as cancelSpeech, onSpeakingChange, primeOnFirstGesture } from "./speech.js";
import { forgetDetectedLanguage, followStorage, initSettings } from "./settings.js";
import { whenSignedIn } from "./signin.js";
import { forgetTurns, newSessionId, state } from "./state/session.js";
import { THEME_KEY, applyTheme, initTheme, inputChanged, setStatus, showError, ui } from "./ui.js";
import { errorText, postJson } from "./util.js";

async function clearConversation() {
  const sure = await confirmAction("Clear every message of this conversation? This cannot be undone.", "Clear");
  if (!sure) return;
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

/** Show conversation `id` (and message `messageId` in it); `url`: "push", "replace" or "keep". */
function useSession(id, { messageId = null, url = "push" } = {}) {
  if (url !== "keep") showInUrl(id, { replace: url === "replace", messageId });
  if (id === state.sessionId) {
    if (messageId !== null) showMessage(messageId);
    return;
  }
  hangUp(); // a call belongs to the conversation it was started in
  state.draft = null;
  cancelSpeech();
  forgetTurns();
  forgetDetectedLanguage();
  clearView();
  if (messageId !== null) showMessage(messageId);
  openSession(id);
  markCurrent();
}

function newChat() {
  // An empty conversation on screen is already a new chat; one is stored with its first message.
  if (state.messages.size > 0 || state.sessionId === null) useSession(newSessionId());
  ui.input.focus();
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
  ui.newChat.addEventListener("click", newChat);
  initSidebar({ open: (id) => useSession(id), newChat, openNew: () => useSession(newSessionId()) });
  initSearch((id, messageId) => useSession(id, { messageId }));
  onConversationEvent(followEvent);
  onNavigate((id, messageId) => useSession(id, { messageId, url: "keep" }));

  // Another tab changed a setting: follow it. (Each tab keeps its own conversation.)
  window.addEventListener("storage", (e) => {
    if (e.key === THEME_KEY) {
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
  whenSignedIn().then(() => {
    useSession(initialSession(), { messageId: messageFromUrl(), url: "replace" });
    refresh();
  });
}

start();
