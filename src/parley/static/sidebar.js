// The user's conversations: the list (newest activity first, older pages on demand), rename in
// place, delete with undo, export, the conversation menu, and the drawer it lives in on a phone.
//
// The list follows changes as the server tells them: a `conversations` event on the socket
// (created, renamed, updated, deleted, from any tab or device of the user) is applied in place, and
// the list is fetched again only when a socket (re)connects. Until a server has sent one (an older
// server), it is fetched again after this tab's own actions, a `title` or finished turn in the open
// conversation, this browser's other tabs (a BroadcastChannel), and whenever the tab is shown or
// focused again (changes made on another device).

import { conversationUrl, devicesUrl } from "./router.js";
import { state } from "./state/session.js";
import { showError, ui } from "./ui.js";
import { apiUrl, errorText, h, svgIcon } from "./util.js";

const PAGE = 50;
const UNDO_MS = 8000;
const REFRESH_DEBOUNCE_MS = 150;
const DRAWER_QUERY = matchMedia("(max-width: 800px)");
const ICON_MORE = "M6 12h.01M12 12h.01M18 12h.01";

const $ = (id) => document.getElementById(id);
const view = {
  sidebar: $("sidebar"),
  list: $("conversation-list"),
  more: $("conversations-more"),
  backdrop: $("drawer-backdrop"),
  toggle: $("drawer-toggle"),
  close: $("sidebar-close"),
  newChat: $("sidebar-new"),
  menuButton: $("conversation-menu-btn"),
  confirm: $("confirm"),
  confirmText: $("confirm-text"),
  confirmOk: $("confirm-ok"),
  devices: $("devices-link"),
};

let conversations = []; // wire form, in list order
let next = null; // the cursor of the next (older) page
const pendingDeletes = new Map(); // sessionId -> {timer, commit}
let app = { open: () => {}, newChat: () => {}, openNew: () => {}, devices: () => {} };
let refreshTimer = 0;
let refreshSeq = 0;
let live = false; // this server sends `conversations` events: they bring every change
let page = "conversation"; // or "devices": then no conversation is the current one
const channel = "BroadcastChannel" in window ? new BroadcastChannel("parley-conversations") : null;

// -- the list ---------------------------------------------------------------------------------

async function fetchPage(before, limit) {
  const url = apiUrl("api/sessions");
  url.searchParams.set("limit", String(limit));
  if (before) url.searchParams.set("before", before);
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(await errorText(response));
  return response.json();
}

/** Reload the list (as many as are shown, at least a page). */
export async function refresh() {
  const seq = ++refreshSeq;
  try {
    const body = await fetchPage(null, Math.min(200, Math.max(PAGE, conversations.length)));
    if (seq !== refreshSeq) return;
    conversations = body.sessions;
    next = body.next;
    draw();
  } catch {
    /* offline or refused: the list stays as it was, the next refresh tries again */
  }
}

/** A refresh soon, once for a burst of reasons. */
export function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, REFRESH_DEBOUNCE_MS);
}

/** Tell this browser's other tabs their lists are out of date, and refresh this one. */
function changed() {
  if (live) return;
  channel?.postMessage("changed");
  refreshSoon();
}

/** A refresh soon, unless the server's events keep the list current. */
function refreshUnlessLive() {
  if (!live) refreshSoon();
}

async function loadOlder() {
  if (!next) return;
  view.more.disabled = true;
  try {
    const body = await fetchPage(next, PAGE);
    const known = new Set(conversations.map((c) => c.sessionId));
    conversations.push(...body.sessions.filter((c) => !known.has(c.sessionId)));
    next = body.next;
    draw();
  } catch (error) {
    showError(`Could not load older conversations: ${error.message}`);
  } finally {
    view.more.disabled = false;
  }
}

function titleOf(c) {
  return c.title || "New conversation";
}

let renaming = false; // a title is being edited in place: redrawing would take its field away
let drawLater = false;

function draw() {
  if (renaming) {
    drawLater = true; // once the rename is done
    return;
  }
  const items = conversations.filter((c) => !pendingDeletes.has(c.sessionId)).map(item);
  view.list.replaceChildren(...items);
  view.more.hidden = !next;
  nameTab();
}

/** The tab's title: the open conversation's (or the page's). */
function nameTab() {
  if (page === "devices") {
    document.title = "Devices · Parley";
    return;
  }
  const title = conversations.find((c) => c.sessionId === state.sessionId)?.title;
  document.title = title ? `${title} · Parley` : "Parley";
}

/** Which page the tab shows ("conversation" or "devices"): its link in the sidebar is marked. */
export function markPage(name) {
  page = name;
  if (name === "devices") view.devices.setAttribute("aria-current", "page");
  else view.devices.removeAttribute("aria-current");
  markCurrent();
}

/** Mark the open conversation in the list. */
export function markCurrent() {
  for (const li of view.list.children) {
    const current = page === "conversation" && li.dataset.sessionId === state.sessionId;
    li.classList.toggle("current", current);
    const link = li.querySelector("a");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  nameTab();
}

function item(c) {
  const link = h("a", {
    className: "conversation-link",
    href: conversationUrl(c.sessionId).href,
    title: titleOf(c),
    dataset: { testid: "conversation-title" },
  }, titleOf(c));
  link.addEventListener("click", (e) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return; // a new tab: the browser's
    e.preventDefault();
    closeDrawer();
    app.open(c.sessionId);
  });
  link.addEventListener("dblclick", (e) => {
    e.preventDefault();
    startRename(c, li);
  });
  const more = h("button", {
    type: "button",
    className: "icon-btn item-menu",
    "aria-label": `Menu of ${titleOf(c)}`,
    title: "Rename, export, delete",
    "aria-haspopup": "menu",
    dataset: { testid: "conversation-menu-button" },
  }, svgIcon(ICON_MORE));
  more.addEventListener("click", (e) => {
    e.stopPropagation();
    openMenu(more, c, li);
  });
  const li = h("li", {
    className: "conversation",
    dataset: { testid: "conversation", sessionId: c.sessionId },
  }, link, more);
  if (page === "conversation" && c.sessionId === state.sessionId) {
    li.classList.add("current");
    link.setAttribute("aria-current", "page");
  }
  return li;
}

function find(sessionId) {
  return conversations.find((c) => c.sessionId === sessionId) ?? { sessionId, title: "" };
}

// -- the menu ---------------------------------------------------------------------------------

let openedMenu = null;

function closeMenu() {
  openedMenu?.remove();
  openedMenu = null;
}

function menuItem(label, testid, action, extra = {}) {
  const tag = extra.href ? "a" : "button";
  const props = { className: "menu-item", role: "menuitem", dataset: { testid }, ...extra };
  if (tag === "button") props.type = "button";
  const el = h(tag, props, label);
  el.addEventListener("click", () => {
    closeMenu();
    action?.();
  });
  return el;
}

function exportUrl(sessionId, format) {
  const url = apiUrl("api/export");
  url.searchParams.set("sessionId", sessionId);
  url.searchParams.set("format", format);
  return url.href;
}

function openMenu(anchor, c, li) {
  const wasOpen = openedMenu?.dataset.for === c.sessionId;
  closeMenu();
  if (wasOpen) return;
  const items = [
    menuItem("Rename", "menu-rename", () => startRename(c, li)),
    menuItem("Export as JSON", "menu-export-json", null, { href: exportUrl(c.sessionId, "json"), download: "" }),
    menuItem("Export as Markdown", "menu-export-markdown", null, {
      href: exportUrl(c.sessionId, "markdown"), download: "",
    }),
    menuItem("Delete", "menu-delete", () => deleteConversation(c.sessionId)),
  ];
  items[items.length - 1].classList.add("danger");
  const menu = h("div", { className: "menu", role: "menu", dataset: { testid: "menu", for: c.sessionId } }, ...items);
  document.body.append(menu);
  const box = anchor.getBoundingClientRect();
  const width = menu.offsetWidth;
  menu.style.top = `${Math.min(box.bottom + 4, innerHeight - menu.offsetHeight - 8)}px`;
  menu.style.left = `${Math.max(8, Math.min(box.right - width, innerWidth - width - 8))}px`;
  openedMenu = menu;
  items[0].focus();
}

// -- rename -----------------------------------------------------------------------------------

function startRename(c, li) {
  if (!li || !li.isConnected) {
    li = [...view.list.children].find((el) => el.dataset.sessionId === c.sessionId);
  }
  if (!li) {
    // The open conversation is not in the list yet (nothing sent): ask in a prompt-free way.
    showError("Send a first message before naming this conversation.");
    return;
  }
  const link = li.querySelector("a");
  const input = h("input", {
    className: "rename-input",
    value: c.title,
    maxLength: 200,
    "aria-label": "New title",
    dataset: { testid: "rename-input" },
  });
  link.hidden = true;
  li.prepend(input);
  input.focus();
  input.select();
  renaming = true;
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    if (save && title && title !== c.title) {
      const known = conversations.find((each) => each.sessionId === c.sessionId);
      if (known) known.title = title; // at once; the refresh confirms it
      link.textContent = title;
      await rename(c.sessionId, title);
    }
    input.remove();
    link.hidden = false;
    renaming = false;
    if (drawLater) {
      drawLater = false;
      draw();
    }
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      finish(true);
    } else if (e.key === "Escape") {
      e.preventDefault();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
}

async function rename(sessionId, title) {
  try {
    const response = await fetch(apiUrl(`api/sessions/${encodeURIComponent(sessionId)}`), {
      method: "PATCH",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ title }),
    });
    if (!response.ok) showError(`Could not rename: ${await errorText(response)}`);
  } catch {
    showError("Cannot reach the server: the conversation was not renamed.");
  }
  changed();
}

// -- delete, with undo ------------------------------------------------------------------------

function sendDelete(sessionId, keepalive = false) {
  return fetch(apiUrl(`api/sessions/${encodeURIComponent(sessionId)}`), { method: "DELETE", keepalive });
}

async function commitDelete(sessionId) {
  const pending = pendingDeletes.get(sessionId);
  if (!pending) return;
  clearTimeout(pending.timer);
  pending.toast.remove();
  try {
    const response = await sendDelete(sessionId);
    if (!response.ok && response.status !== 404) showError(`Could not delete: ${await errorText(response)}`);
  } catch {
    showError("Cannot reach the server: the conversation was not deleted.");
  }
  pendingDeletes.delete(sessionId);
  changed();
}

/** Hide the conversation at once; it is deleted on the server unless undone within UNDO_MS. */
export function deleteConversation(sessionId) {
  if (pendingDeletes.has(sessionId)) return;
  const c = find(sessionId);
  const wasOpen = sessionId === state.sessionId;
  const undo = h("button", { type: "button", className: "text-btn", dataset: { testid: "undo" } }, "Undo");
  const now = h("button", {
    type: "button",
    className: "icon-btn",
    "aria-label": "Delete now",
    title: "Delete now",
    dataset: { testid: "delete-now" },
  }, svgIcon("M6 6l12 12M18 6L6 18"));
  const toast = h("div", { className: "toast toast-info", role: "status", dataset: { testid: "undo-toast" } },
    h("span", { className: "toast-text" }, `Deleted “${titleOf(c)}”.`), undo, now);
  undo.addEventListener("click", () => {
    const pending = pendingDeletes.get(sessionId);
    if (!pending) return;
    clearTimeout(pending.timer);
    toast.remove();
    pendingDeletes.delete(sessionId);
    draw();
    if (wasOpen) app.open(sessionId);
  });
  now.addEventListener("click", () => commitDelete(sessionId));
  pendingDeletes.set(sessionId, { toast, timer: setTimeout(() => commitDelete(sessionId), UNDO_MS) });
  ui.toasts.append(toast);
  draw();
  if (wasOpen) app.openNew();
}

// A tab closed within the undo time: the delete still happens.
window.addEventListener("pagehide", () => {
  for (const sessionId of pendingDeletes.keys()) sendDelete(sessionId, true).catch(() => {});
});

/** The open conversation was deleted elsewhere (its socket said so). */
export function deletedElsewhere(sessionId) {
  conversations = conversations.filter((c) => c.sessionId !== sessionId);
  draw();
  showError("This conversation was deleted.");
  app.openNew();
}

// -- confirmation -----------------------------------------------------------------------------

/** Ask before a destructive action; resolves true when confirmed. */
export function confirmAction(text, okLabel) {
  view.confirmText.textContent = text;
  view.confirmOk.textContent = okLabel;
  view.confirm.returnValue = "";
  view.confirm.showModal();
  return new Promise((resolve) => {
    view.confirm.addEventListener("close", () => resolve(view.confirm.returnValue === "ok"), { once: true });
  });
}

// -- the drawer (a phone) ---------------------------------------------------------------------

export function openDrawer() {
  if (!DRAWER_QUERY.matches) return;
  view.sidebar.dataset.open = "true";
  view.backdrop.hidden = false;
  view.toggle.setAttribute("aria-expanded", "true");
}

export function closeDrawer() {
  view.sidebar.dataset.open = "false";
  view.backdrop.hidden = true;
  view.toggle.setAttribute("aria-expanded", "false");
}

// -- start ------------------------------------------------------------------------------------

/** `open(id)` shows a conversation, `openNew()` a new one, `newChat()` too unless the one on screen is empty. */
export function initSidebar(hooks) {
  app = hooks;
  view.more.addEventListener("click", loadOlder);
  view.newChat.addEventListener("click", () => {
    closeDrawer();
    app.newChat();
  });
  view.toggle.addEventListener("click", () => {
    if (view.sidebar.dataset.open === "true") closeDrawer();
    else openDrawer();
  });
  view.close.addEventListener("click", closeDrawer);
  view.devices.href = devicesUrl().href; // from /c/<id> too
  view.devices.addEventListener("click", (e) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return; // a new tab: the browser's
    e.preventDefault();
    closeDrawer();
    app.devices();
  });
  view.backdrop.addEventListener("click", closeDrawer);
  view.menuButton.addEventListener("click", (e) => {
    e.stopPropagation();
    const li = [...view.list.children].find((el) => el.dataset.sessionId === state.sessionId);
    openMenu(view.menuButton, find(state.sessionId), li);
  });
  document.addEventListener("click", (e) => {
    if (openedMenu && !openedMenu.contains(e.target)) closeMenu();
  });
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    if (openedMenu) closeMenu();
    else closeDrawer();
  });
  DRAWER_QUERY.addEventListener("change", closeDrawer);
  if (channel) channel.onmessage = refreshUnlessLive;
  window.addEventListener("focus", refreshUnlessLive);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") refreshUnlessLive();
  });
}

/** A conversation event of the open conversation (conversation.js onConversationEvent). */
export function followEvent(event) {
  if (event.type === "deleted") deletedElsewhere(event.sessionId);
  else changed(); // a new title, or a finished turn: the list's order and titles move
}

// -- live changes (a `conversations` event) -----------------------------------------------------

/** `conversations` events from the socket, and its `connected` (conversation.js onListEvent). */
export function followList(event) {
  if (event.type === "connected") {
    // A new socket missed whatever changed while there was none (the list's events are not
    // replayed on a resume).
    if (live) refreshSoon();
    return;
  }
  const session = event.session;
  if (!session || typeof session.sessionId !== "string") return;
  live = true;
  const at = conversations.findIndex((c) => c.sessionId === session.sessionId);
  const known = at >= 0 ? conversations[at] : null;
  switch (event.action) {
    case "deleted":
      if (known) conversations.splice(at, 1);
      break;
    case "renamed": // in place: a new title is no new activity
      if (known) conversations[at] = { ...known, ...session };
      break;
    case "created":
    case "updated": // the newest activity: to the top (also one from an older page not shown yet)
      if (known) conversations.splice(at, 1);
      conversations.unshift({ ...known, ...session });
      break;
    default:
      return; // an action newer than this page
  }
  draw();
}
