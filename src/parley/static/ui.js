// The page's fixed controls: element lookups, toasts, the connection pill, the theme, the input box.

import { state } from "./state/session.js";
import { h, store, stored, svgIcon } from "./util.js";

export const THEME_KEY = "parleyTheme";
const TOAST_MS = 10_000;
const MAX_TOASTS = 3;

const $ = (id) => document.getElementById(id);
export const ui = {
  chat: $("chat"),
  list: $("messages"),
  empty: $("empty"),
  status: $("status"),
  form: $("composer"),
  input: $("input"),
  send: $("send"),
  stop: $("stop"),
  mic: $("mic"),
  clear: $("clear"),
  newChat: $("new-chat"),
  theme: $("theme"),
  autoSend: $("auto-send"),
  autoSpeak: $("auto-speak"),
  language: $("language"),
  recording: $("recording"),
  toasts: $("toasts"),
  composer: document.querySelector(".composer"),
  actions: document.querySelector(".topbar .actions"),
};

// -- toasts -----------------------------------------------------------------------------------

export function showError(text) {
  toast(String(text || "Something went wrong"), { className: "toast", role: "alert", testid: "toast" });
}

/** A toast that reports something done (an import), not a failure. */
export function showNotice(text) {
  toast(String(text), { className: "toast toast-info", role: "status", testid: "notice" });
}

function toast(message, { className, role, testid }) {
  for (const existing of ui.toasts.children) {
    if (existing.dataset.text === message) existing.remove(); // the newest copy replaces the old
  }
  const close = h("button", {
    type: "button",
    className: "icon-btn",
    "aria-label": "Dismiss",
    title: "Dismiss",
  }, svgIcon("M6 6l12 12M18 6L6 18"));
  const el = h("div", { className, role, dataset: { testid, text: message } },
    h("span", { className: "toast-text" }, message), close);
  const dismiss = () => el.remove();
  close.addEventListener("click", dismiss);
  setTimeout(dismiss, TOAST_MS);
  ui.toasts.append(el);
  while (ui.toasts.children.length > MAX_TOASTS) ui.toasts.firstElementChild.remove();
}

// -- connection status ------------------------------------------------------------------------

const STATUS_LABELS = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

export function setStatus(status, detail) {
  ui.status.dataset.state = status;
  ui.status.querySelector(".status-text").textContent = STATUS_LABELS[status];
  ui.status.title = detail ?? STATUS_LABELS[status];
}

// -- theme ------------------------------------------------------------------------------------

const darkQuery = matchMedia("(prefers-color-scheme: dark)");

export function applyTheme() {
  const chosen = stored(THEME_KEY);
  const root = document.documentElement;
  if (chosen === "dark" || chosen === "light") root.dataset.theme = chosen;
  else delete root.dataset.theme;
  const dark = chosen ? chosen === "dark" : darkQuery.matches;
  root.classList.toggle("dark-theme", dark);
  ui.theme.setAttribute("aria-label", dark ? "Switch to light theme" : "Switch to dark theme");
  ui.theme.title = ui.theme.getAttribute("aria-label");
  document.querySelector('meta[name="theme-color"]').content = dark ? "#0f1116" : "#f7f7f9";
}

export function initTheme() {
  applyTheme();
  darkQuery.addEventListener("change", applyTheme);
  ui.theme.addEventListener("click", () => {
    const dark = document.documentElement.classList.contains("dark-theme");
    store(THEME_KEY, dark ? "light" : "dark");
    applyTheme();
  });
}

// -- the input box ----------------------------------------------------------------------------

export function inputChanged() {
  const input = ui.input;
  input.style.height = "auto";
  input.style.height = `${input.scrollHeight}px`;
  ui.send.disabled = !input.value.trim();
}

/** Put a refused message back in the input box, unless the user has typed something new. */
export function restoreDraft() {
  if (state.draft && !ui.input.value.trim()) {
    ui.input.value = state.draft.text;
    inputChanged();
  }
  state.draft = null;
}
