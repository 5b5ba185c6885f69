// The conversation on screen: one <li> per message, in id order, with its bubble and meta line.

import { addCopyButtons } from "./codecopy.js";
import { renderMarkdown } from "./markdown.js";
import { isSpeaking, speaking, toggleReadAloud } from "./speech.js";
import { FINAL, state } from "./state/session.js";
import { showError, ui } from "./ui.js";
import { h, svgIcon } from "./util.js";

const RENDER_FALLBACK_MS = 100;
const ICON_SPEAK = "M11 5 6 9H3v6h3l5 4V5zM15.5 8.5a5 5 0 0 1 0 7M18.5 5.5a9 9 0 0 1 0 13";
const ICON_STOP = "M7 7h10v10H7z";
const ICON_COPY = "M9 9h11v11H9zM5 15H4V4h11v1";
const ICON_EDIT = "M4 20h4L19 9l-4-4L4 16v4zM13.5 6.5l4 4";
const ICON_REGENERATE = "M20 11a8 8 0 1 0-2.3 5.7M20 4v7h-7";

const dirty = new Set();
// What the Edit and Regenerate buttons do (edit.js, wired by app.js).
let actions = { edit: () => {}, regenerate: () => {} };

/** `edit(entry)` opens the editor of a user message, `regenerate(entry)` asks a reply's question again. */
export function setMessageActions(handlers) {
  actions = handlers;
}
let frame = null; // the pending render: {raf, timer}

// -- scrolling --------------------------------------------------------------------------------

// The view follows new text while the reader is at the bottom, and stays put once they scroll up.
let following = true;
let lastTop = 0;

function nearBottom() {
  const { scrollHeight, scrollTop, clientHeight } = ui.chat;
  return scrollHeight - scrollTop - clientHeight < 80;
}

export function scrollToBottom() {
  following = true;
  ui.chat.scrollTop = ui.chat.scrollHeight;
}

/** Bring a message into view (a search result) and stop following the newest line. */
export function scrollToMessage(el) {
  following = false;
  el.scrollIntoView({ block: "center" });
  lastTop = ui.chat.scrollTop;
}

export function initScrolling() {
  ui.chat.addEventListener("scroll", () => {
    // Only the reader scrolling up stops the following; text growing below never does.
    const top = ui.chat.scrollTop;
    if (nearBottom()) following = true;
    else if (top < lastTop) following = false;
    lastTop = top;
  }, { passive: true });
  // Growing text, a resized window or an opened keyboard: keep the newest line in view.
  new ResizeObserver(() => following && scrollToBottom()).observe(ui.list);
  new ResizeObserver(() => following && scrollToBottom()).observe(ui.chat);
}

// -- messages ---------------------------------------------------------------------------------

function formatTime(iso) {
  const date = iso ? new Date(iso) : new Date();
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function createEntry(wire) {
  const body = h("div", { className: "content", dataset: { testid: "message-content" } });
  const meta = h("div", { className: "meta" });
  const el = h("li", {
    className: "msg",
    dataset: { testid: "message", role: wire.role, id: String(wire.id), turnId: wire.turnId ?? "" },
  }, h("div", { className: "bubble" }, body), meta);
  const entry = {
    id: wire.id,
    role: wire.role,
    turnId: wire.turnId,
    content: "",
    status: "pending",
    error: null,
    createdAt: null,
    el,
    body,
    meta,
    feed: null, // "ws" or "sse": the one stream this reply grows from
    catchUp: null, // a feed whose next chunk holds the whole text so far (a socket joining mid-reply)
  };
  state.messages.set(entry.id, entry);
  // Keep the list in id order (the store's order); new messages almost always go last.
  let after = ui.list.lastElementChild;
  while (after && Number(after.dataset.id) > entry.id) after = after.previousElementSibling;
  if (after) after.after(el);
  else ui.list.prepend(el);
  return entry;
}

function renderBody(entry) {
  if (entry.role === "user") {
    entry.body.textContent = entry.content; // user text is shown as typed, never as markup
  } else if (entry.content) {
    try {
      entry.body.replaceChildren(renderMarkdown(entry.content));
      addCopyButtons(entry.body);
    } catch (error) {
      // A reply the renderer cannot take must still be readable, and must not break the view
      // (it would again on every load of the session): show it as the plain text it is.
      console.error("markdown render failed", error);
      entry.body.textContent = entry.content;
    }
  } else if (entry.status === "pending") {
    entry.body.replaceChildren(
      h("span", { className: "typing", "aria-label": "Writing a reply", role: "img" },
        h("span"), h("span"), h("span")));
  } else {
    const what = {
      cancelled: "Stopped before any text.",
      interrupted: "Interrupted before any of it was heard.",
    }[entry.status] ?? "No reply.";
    entry.body.replaceChildren(h("span", { className: "placeholder" }, what));
  }
}

function metaButton(label, icon, testid, onClick) {
  const button = h("button", { type: "button", className: "meta-btn", title: label, dataset: { testid } },
    svgIcon(icon), h("span", {}, label));
  button.addEventListener("click", onClick);
  return button;
}

function copyButton(entry) {
  const copy = metaButton("Copy", ICON_COPY, "copy", async () => {
    try {
      await navigator.clipboard.writeText(entry.content);
      copy.lastElementChild.textContent = "Copied";
      setTimeout(() => (copy.lastElementChild.textContent = "Copy"), 1500);
    } catch {
      showError("Could not copy to the clipboard.");
    }
  });
  copy.setAttribute("aria-label", "Copy reply");
  return copy;
}

function readAloudButton(entry) {
  const on = isSpeaking(entry.id);
  const button = metaButton(on ? "Stop" : "Listen", on ? ICON_STOP : ICON_SPEAK, "read-aloud",
    () => toggleReadAloud(entry));
  button.setAttribute("aria-label", on ? "Stop reading aloud" : "Read aloud");
  button.setAttribute("aria-pressed", String(on));
  button.classList.toggle("active", on);
  return button;
}

function regenerateButton(entry) {
  const button = metaButton("Regenerate", ICON_REGENERATE, "regenerate", () => actions.regenerate(entry));
  button.classList.add("turn-action", "regenerate");
  button.setAttribute("aria-label", "Regenerate this reply");
  return button;
}

function renderMeta(entry) {
  const parts = [h("time", { dateTime: entry.createdAt ?? "" }, formatTime(entry.createdAt))];
  if (entry.status === "cancelled") {
    parts.push(h("span", { className: "badge badge-cancelled" }, "Stopped"));
  } else if (entry.status === "interrupted") {
    const badge = h("span", { className: "badge badge-interrupted", dataset: { testid: "interrupted" } }, "Interrupted");
    badge.title = "You spoke over this reply: only the part you heard is kept";
    parts.push(badge);
  } else if (entry.status === "failed") {
    parts.push(h("span", { className: "badge badge-failed" }, "Failed"));
    if (entry.error) parts.push(h("span", { className: "meta-error" }, entry.error));
  }
  if (entry.role === "assistant") {
    const finished = FINAL.has(entry.status) && entry.content;
    if (finished || isSpeaking(entry.id)) parts.push(readAloudButton(entry));
    if (finished && navigator.clipboard) parts.push(copyButton(entry));
    // Shown on the last message only, and not while a reply is written (app.css).
    if (FINAL.has(entry.status)) parts.push(regenerateButton(entry));
  } else if (entry.role === "user" && FINAL.has(entry.status)) {
    const edit = metaButton("Edit", ICON_EDIT, "edit", () => actions.edit(entry));
    edit.classList.add("turn-action");
    edit.setAttribute("aria-label", "Edit and resend this message");
    parts.push(edit);
  }
  entry.meta.replaceChildren(...parts);
  entry.el.dataset.status = entry.status;
}

export function render(entry) {
  renderBody(entry);
  renderMeta(entry);
  dirty.delete(entry);
}

/** Redraw a message's meta line (its read-aloud button follows the speech). */
export function refreshMeta(messageId) {
  const entry = state.messages.get(messageId);
  if (entry) renderMeta(entry);
}

export function renderLater(entry) {
  // Re-rendering the markdown of a long reply per chunk is wasted work: once per frame is enough.
  // Browsers pause animation frames in tabs they do not paint, so a timer makes sure text still
  // lands (and a tab shown later is current at once).
  dirty.add(entry);
  if (frame) return;
  const flush = () => {
    cancelAnimationFrame(frame.raf);
    clearTimeout(frame.timer);
    frame = null;
    for (const pending of dirty) renderBody(pending);
    dirty.clear();
  };
  frame = { raf: requestAnimationFrame(flush), timer: setTimeout(flush, RENDER_FALLBACK_MS) };
}

export function removeEntry(entry) {
  entry.el.remove();
  state.messages.delete(entry.id);
  dirty.delete(entry);
}

export function clearView() {
  state.view++;
  state.messages.clear();
  state.running.clear();
  dirty.clear();
  ui.list.replaceChildren();
  updateChrome();
}

/** The empty-state hint, the stop button (a reply running, or speech playing) and aria-busy. */
export function updateChrome() {
  ui.empty.hidden = state.messages.size > 0;
  const writing = state.running.size > 0 || state.httpTurns > 0;
  ui.stop.hidden = !writing && !speaking();
  const label = writing ? "Stop the reply" : "Stop speaking";
  ui.stop.setAttribute("aria-label", label);
  ui.stop.title = label;
  ui.list.setAttribute("aria-busy", String(state.running.size > 0));
}
