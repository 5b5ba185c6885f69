// Parley web app: each tab shows the conversation its address names (/c/<id>), live through the
// session WebSocket, with the user's other conversations in a sidebar; or the Devices page
// (/devices), while the conversation's socket stays open behind it.
// This module wires the others together: conversation state (state/session.js), which one is open
// (router.js), server events (conversation.js), the socket and HTTP fallback (connection.js), the
// message list (render.js), edit and regenerate (edit.js), the list of conversations (sidebar.js),
// search (search.js) and import (importing.js), the microphone (recorder.js), spoken replies
// (speech.js), voice calls (call.js), the user's devices (devices.js), options (settings.js),
// chrome (ui.js) and who is signed in (signin.js).

import { hangUp, initCall } from "./call.js";
import { openSession, reconnectNow, send, socketOpen, stopTurn } from "./connection.js";
import { toggleRecording } from "./recorder.js";
import { onConversationEvent, onListEvent, showMessage } from "./conversation.js";
import { hideDevices, initDevices, showDevices } from "./devices.js";
import { regenerate, startEdit } from "./edit.js";
import { initImport } from "./importing.js";
import { clearView, initScrolling, refreshMeta, setMessageActions, updateChrome } from "./render.js";
import { initialSession, messageFromUrl, onNavigate, pageFromUrl, showDevicesInUrl, showInUrl } from "./router.js";
import { initSearch } from "./search.js";
import {
  confirmAction, followEvent, followList, initSidebar, markCurrent, markPage, refresh,
} from "./sidebar.js";
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

let page = "conversation";

/** Show one page: "conversation" (the chat and its composer) or "devices". */
function showPage(name) {
  if (name === page) return;
  page = name;
  const devices = name === "devices";
  ui.chat.hidden = devices;
  ui.composer.hidden = devices;
  ui.actions.hidden = devices;
  if (devices) showDevices();
  else hideDevices();
  markPage(name);
}

function openDevices({ url = "push" } = {}) {
  if (url === "push") showDevicesInUrl();
  showPage("devices");
}

/** Show conversation `id` (and message `messageId` in it); `url`: "push", "replace" or "keep".
 * `show`: false keeps the page on screen (the Devices page) and opens the conversation behind it. */
function useSession(id, { messageId = null, url = "push", show = true } = {}) {
  if (show) showPage("conversation");
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
  if (page !== "conversation" || state.messages.size > 0 || state.sessionId === null) useSession(newSessionId());
  ui.input.focus();
}

/** The open conversation went (deleted): a new one takes its place, on screen only if it was. */
function openNew() {
  if (page === "conversation") useSession(newSessionId());
  else useSession(newSessionId(), { url: "keep", show: false });
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
  setMessageActions({ edit: startEdit, regenerate });
  initSidebar({ open: (id) => useSession(id), newChat, openNew, devices: () => openDevices() });
  initSearch((id, messageId) => useSession(id, { messageId }));
  initImport(refresh);
  initDevices({ open: (id) => useSession(id) });
  onConversationEvent(followEvent);
  onListEvent(followList);
  onNavigate((id, messageId) => useSession(id, { messageId, url: "keep" }), () => openDevices({ url: "keep" }));

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
    if (pageFromUrl() === "devices") {
      useSession(initialSession(), { url: "keep", show: false });
      openDevices({ url: "keep" });
    } else {
      useSession(initialSession(), { messageId: messageFromUrl(), url: "replace" });
    }
    refresh();
  });
}

start();
