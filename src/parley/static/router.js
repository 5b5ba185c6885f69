// Which conversation this tab shows: its address, /c/<id>, is the source of truth, so tabs are
// independent and a link opens the same conversation on any of the user's devices. localStorage
// only remembers the last one, for a bare "/". One other page has an address: /devices.

import { SESSION_KEY, isValidSessionId, newSessionId } from "./state/session.js";
import { APP_ROOT, store, stored } from "./util.js";

/** The session id in this tab's address, or null. */
export function sessionFromUrl() {
  const path = location.pathname;
  if (!path.startsWith(APP_ROOT.pathname)) return null;
  const match = /^c\/([^/]+)$/.exec(path.slice(APP_ROOT.pathname.length));
  if (!match) return null;
  let id;
  try {
    id = decodeURIComponent(match[1]);
  } catch {
    return null;
  }
  return isValidSessionId(id) ? id : null;
}

/** The page this tab's address names: "devices", else "conversation" (/ and /c/<id>). */
export function pageFromUrl() {
  const path = location.pathname;
  if (path.startsWith(APP_ROOT.pathname) && path.slice(APP_ROOT.pathname.length) === "devices") return "devices";
  return "conversation";
}

export function devicesUrl() {
  return new URL("devices", APP_ROOT);
}

/** Put the Devices page in the address bar (a new history entry). */
export function showDevicesInUrl() {
  const url = devicesUrl();
  if (url.href !== location.href) history.pushState({ page: "devices" }, "", url);
}

/** A message id the address points at (#m<id>: a search result), or null. */
export function messageFromUrl() {
  const match = /^#m(\d+)$/.exec(location.hash);
  return match ? Number(match[1]) : null;
}

export function conversationUrl(id, messageId = null) {
  const url = new URL(`c/${encodeURIComponent(id)}`, APP_ROOT);
  if (messageId !== null) url.hash = `m${messageId}`;
  return url;
}

/** The conversation to open first: the address's, else the last one of this browser, else a new one. */
export function initialSession() {
  const fromUrl = sessionFromUrl();
  if (fromUrl) return fromUrl;
  const saved = stored(SESSION_KEY);
  return isValidSessionId(saved) ? saved : newSessionId();
}

/** Put conversation `id` in the address bar (a new history entry unless `replace`), and remember it. */
export function showInUrl(id, { replace = false, messageId = null } = {}) {
  const url = conversationUrl(id, messageId);
  if (url.href !== location.href) {
    if (replace) history.replaceState({ sessionId: id }, "", url);
    else history.pushState({ sessionId: id }, "", url);
  }
  store(SESSION_KEY, id);
}

/** Back/forward: `listener(id, messageId)` with the conversation the address now names, or
 * `toDevices()` when it names the Devices page. */
export function onNavigate(listener, toDevices) {
  window.addEventListener("popstate", () => {
    if (pageFromUrl() === "devices") {
      toDevices();
      return;
    }
    const id = sessionFromUrl();
    if (id) listener(id, messageFromUrl());
  });
}
