// The Devices page (/devices): the user's XiaoZhi devices (GET /api/devices), a new one bound by
// the 6-digit code it shows or says (POST /api/devices/bind), renamed in place (PATCH) and
// removed after a confirmation (DELETE). Each links to its conversation, `xiaozhi-<mac without
// colons>`, which shows what the device hears and says live.
//
// Errors stay where they happened: the API's own message under the code field, or under the
// device it is about.

import { conversationUrl } from "./router.js";
import { confirmAction } from "./sidebar.js";
import { apiUrl, errorText, h, postJson } from "./util.js";

const $ = (id) => document.getElementById(id);
const view = {
  page: $("devices-page"),
  title: $("devices-title"),
  form: $("device-bind"),
  code: $("device-code"),
  submit: $("device-bind-submit"),
  error: $("device-bind-error"),
  status: $("devices-status"),
  list: $("device-list"),
  empty: $("devices-empty"),
};

// Whether a device is online changes without an event to the page: look again now and then.
const POLL_MS = 15_000;

let app = { open: () => {} };
let devices = [];
let loadSeq = 0;
let pollTimer = 0;

/** A device's conversation: the session id its talk is stored under. */
export function deviceSession(deviceId) {
  return `xiaozhi-${deviceId.replaceAll(":", "")}`;
}

function nameOf(device) {
  return device.name || `Device ${device.deviceId}`;
}

function say(text) {
  view.status.textContent = text;
}

function deviceUrl(device) {
  return apiUrl(`api/devices/${encodeURIComponent(device.deviceId)}`);
}

// -- the list ---------------------------------------------------------------------------------

async function load() {
  const seq = ++loadSeq;
  try {
    const response = await fetch(apiUrl("api/devices"), { cache: "no-store" });
    if (seq !== loadSeq) return;
    if (!response.ok) {
      say(`Could not load your devices: ${await errorText(response)}`);
      return;
    }
    const body = await response.json();
    if (seq !== loadSeq) return;
    devices = Array.isArray(body.devices) ? body.devices : [];
    draw();
  } catch {
    if (seq === loadSeq) say("Cannot reach the server: the list may be out of date.");
  }
}

function draw() {
  view.list.replaceChildren(...devices.map(item));
  view.empty.hidden = devices.length > 0;
}

function itemOf(deviceId) {
  return [...view.list.children].find((li) => li.dataset.deviceId === deviceId) ?? null;
}

function formatDate(seconds) {
  if (typeof seconds !== "number") return "";
  return new Date(seconds * 1000).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

function facts(device) {
  const online = h("span", {
    className: "device-online",
    dataset: { testid: "device-online", online: String(Boolean(device.online)) },
  }, device.online ? "Online" : "Offline");
  const parts = [online, h("code", { className: "device-mac", dataset: { testid: "device-mac" } }, device.deviceId)];
  if (device.boundAt) {
    parts.push(h("span", {}, "added ", h("time", { dateTime: new Date(device.boundAt * 1000).toISOString() },
      formatDate(device.boundAt))));
  }
  if (device.firmware) parts.push(h("span", {}, `firmware ${device.firmware}`));
  return h("p", { className: "device-facts" }, ...parts);
}

function item(device) {
  const name = nameOf(device);
  const conversation = h("a", {
    className: "text-btn",
    href: conversationUrl(deviceSession(device.deviceId)).href,
    dataset: { testid: "device-conversation" },
    "aria-label": `Conversation of ${name}`,
  }, "Conversation");
  conversation.addEventListener("click", (e) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return; // a new tab: the browser's
    e.preventDefault();
    app.open(deviceSession(device.deviceId));
  });
  const rename = h("button", {
    type: "button",
    className: "text-btn",
    "aria-label": `Rename ${name}`,
    dataset: { testid: "device-rename" },
  }, "Rename");
  const remove = h("button", {
    type: "button",
    className: "text-btn danger-text",
    "aria-label": `Remove ${name}`,
    dataset: { testid: "device-remove" },
  }, "Remove");
  const heading = h("h3", { className: "device-name", dataset: { testid: "device-name" } }, name);
  const error = h("p", { className: "form-error", role: "alert", dataset: { testid: "device-error" }, hidden: true });
  const li = h("li", { className: "device", dataset: { testid: "device", deviceId: device.deviceId } },
    h("div", { className: "device-main" }, heading, facts(device)),
    h("div", { className: "device-actions" }, conversation, rename, remove),
    error);
  rename.addEventListener("click", () => startRename(device, li));
  remove.addEventListener("click", () => removeDevice(device, li));
  return li;
}

function showItemError(li, text) {
  const error = li.querySelector(".form-error");
  error.textContent = text;
  error.hidden = !text;
}

// -- rename in place --------------------------------------------------------------------------

function startRename(device, li) {
  const heading = li.querySelector(".device-name");
  const input = h("input", {
    className: "rename-input",
    value: device.name,
    maxLength: 64,
    "aria-label": `New name of ${nameOf(device)}`,
    dataset: { testid: "device-name-input" },
  });
  const save = h("button", { type: "submit", className: "primary-btn small", dataset: { testid: "device-name-save" } }, "Save");
  const cancel = h("button", { type: "button", className: "text-btn", dataset: { testid: "device-name-cancel" } }, "Cancel");
  const form = h("form", { className: "device-rename" }, input, save, cancel);
  heading.hidden = true;
  heading.after(form);
  li.querySelector(".device-actions").hidden = true;
  input.focus();
  input.select();

  const close = (focusRename) => {
    form.remove();
    heading.hidden = false;
    li.querySelector(".device-actions").hidden = false;
    if (focusRename) li.querySelector('[data-testid="device-rename"]').focus();
  };
  cancel.addEventListener("click", () => {
    showItemError(li, "");
    close(true);
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      showItemError(li, "");
      close(true);
    }
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = input.value.trim();
    if (name === device.name) {
      close(true);
      return;
    }
    save.disabled = true;
    try {
      const response = await fetch(deviceUrl(device), {
        method: "PATCH",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name }),
      });
      if (!response.ok) {
        showItemError(li, await errorText(response)); // the editor stays open with what was typed
        input.focus();
        return;
      }
      const renamed = await response.json();
      devices = devices.map((d) => (d.deviceId === renamed.deviceId ? renamed : d));
      draw();
      say(`Renamed to “${nameOf(renamed)}”.`);
      itemOf(renamed.deviceId)?.querySelector('[data-testid="device-rename"]').focus();
    } catch {
      showItemError(li, "Cannot reach the server: the device was not renamed.");
    } finally {
      save.disabled = false;
    }
  });
}

// -- remove -----------------------------------------------------------------------------------

async function removeDevice(device, li) {
  const name = nameOf(device);
  const sure = await confirmAction(
    `Remove “${name}”? It stops working with Parley until it is activated again with a new code.`, "Remove");
  if (!sure) {
    li.querySelector('[data-testid="device-remove"]').focus();
    return;
  }
  try {
    const response = await fetch(deviceUrl(device), { method: "DELETE" });
    if (!response.ok && response.status !== 404) {
      showItemError(li, await errorText(response));
      return;
    }
  } catch {
    showItemError(li, "Cannot reach the server: the device was not removed.");
    return;
  }
  devices = devices.filter((d) => d.deviceId !== device.deviceId);
  draw();
  say(`Removed “${name}”.`);
  view.code.focus();
}

// -- bind by code -----------------------------------------------------------------------------

function showBindError(text) {
  view.error.textContent = text;
  view.error.hidden = !text;
  if (text) view.code.setAttribute("aria-invalid", "true");
  else view.code.removeAttribute("aria-invalid");
}

async function bind(e) {
  e.preventDefault();
  showBindError("");
  view.submit.disabled = true;
  try {
    const response = await postJson("api/devices/bind", { code: view.code.value.trim() });
    if (!response.ok) {
      showBindError(await errorText(response));
      view.code.focus();
      return;
    }
    const device = await response.json();
    view.code.value = "";
    devices = [device, ...devices.filter((d) => d.deviceId !== device.deviceId)];
    draw();
    say(`Added “${nameOf(device)}”.`);
    load(); // the server's order and online state
  } catch {
    showBindError("Cannot reach the server: no device was added.");
  } finally {
    view.submit.disabled = false;
  }
}

// -- start ------------------------------------------------------------------------------------

/** Show the page (its list fresh from the server) and move focus to its heading. */
export function showDevices() {
  view.page.hidden = false;
  say("");
  showBindError("");
  load();
  clearInterval(pollTimer);
  pollTimer = setInterval(() => document.visibilityState === "visible" && !editingAny() && load(), POLL_MS);
  view.title.focus();
}

export function hideDevices() {
  view.page.hidden = true;
  clearInterval(pollTimer);
}

/** A name is being edited in place: a redraw would take the field away. */
function editingAny() {
  return view.list.querySelector(".device-rename") !== null;
}

/** `open(sessionId)` shows a conversation (a device's). */
export function initDevices(hooks) {
  app = hooks;
  view.form.addEventListener("submit", bind);
  // Online state changes while the page is away: look again when it is shown.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && !view.page.hidden && !editingAny()) load();
  });
}
