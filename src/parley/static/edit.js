// Edit and resend, and regenerate. "Edit" turns one of the user's messages into an editor; its
// new text is sent with `editOf` (that message's id), so the server runs it in the message's place
// and that message and every later one leave the conversation (its `replaced` event removes them
// from every tab). "Regenerate" on the last reply resends the user message before it unchanged,
// with its id.

import { send } from "./connection.js";
import { state } from "./state/session.js";
import { ui } from "./ui.js";
import { h } from "./util.js";

let editing = null; // {entry, form}

function focusAction(entry, testid) {
  entry.meta.querySelector(`[data-testid="${testid}"]`)?.focus();
}

function close({ focusEdit = false } = {}) {
  if (!editing) return;
  const { entry, form } = editing;
  editing = null;
  form.remove();
  entry.el.classList.remove("editing");
  if (focusEdit) focusAction(entry, "edit");
}

/** Turn user message `entry` into an editor of its text. */
export function startEdit(entry) {
  close();
  const field = h("textarea", {
    className: "edit-input",
    rows: 3,
    value: entry.content,
    "aria-label": "Edit your message",
    dataset: { testid: "edit-input" },
  });
  const cancel = h("button", { type: "button", className: "text-btn", dataset: { testid: "edit-cancel" } }, "Cancel");
  const resend = h("button", { type: "submit", className: "primary-btn small", dataset: { testid: "edit-send" } }, "Send");
  const form = h("form", { className: "msg-editor", dataset: { testid: "message-editor" } },
    field, h("div", { className: "editor-buttons" }, cancel, resend));
  const changed = () => (resend.disabled = !field.value.trim());
  field.addEventListener("input", changed);
  field.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      close({ focusEdit: true });
    } else if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  cancel.addEventListener("click", () => close({ focusEdit: true }));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = field.value;
    if (!text.trim()) return;
    close();
    ui.input.focus();
    send(text, { editOf: entry.id });
  });
  entry.el.classList.add("editing");
  entry.el.append(form);
  editing = { entry, form };
  changed();
  field.focus();
  field.setSelectionRange(field.value.length, field.value.length);
}

/** The user message a reply answers: the nearest one before it. */
function questionOf(reply) {
  let found = null;
  for (const entry of state.messages.values()) {
    if (entry.role === "user" && entry.id < reply.id && (!found || entry.id > found.id)) found = entry;
  }
  return found;
}

/** Ask the question of reply `entry` again, in its own place. */
export function regenerate(entry) {
  const question = questionOf(entry);
  if (!question) return;
  close();
  send(question.content, { editOf: question.id });
}

