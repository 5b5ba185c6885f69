// Small helpers every module uses: storage that may be blocked, URLs, DOM building, HTTP errors.

export function stored(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null; // storage blocked: the app still works, it just forgets
  }
}

export function store(key, value) {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch {
    /* see stored() */
  }
}

/** A random id of `length` base-36 characters (crypto.randomUUID needs a secure page; this does not). */
export function randomId(length = 16) {
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  return Array.from(bytes, (b) => (b % 36).toString(36)).join("");
}

/** The app's root: the folder above static/ (so also behind a proxy under a path prefix, and
 * from a conversation's page, /c/<id>). */
export const APP_ROOT = new URL("../", import.meta.url);

export function apiUrl(path) {
  return new URL(path, APP_ROOT);
}

export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

/** A 24x24 stroked icon; `pathData` may hold several subpaths. */
export function svgIcon(pathData) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", pathData);
  svg.append(path);
  return svg;
}

/** Parley's one JSON error shape ({error, code, ...}), or a stand-in for a body that is not it. */
export async function errorBody(response) {
  try {
    const body = await response.json();
    if (body && typeof body.error === "string" && body.error) return body;
  } catch {
    /* not JSON */
  }
  return { error: `The server answered ${response.status} ${response.statusText}`.trim(), code: null };
}

/** The message of an HTTP error: the `error` of Parley's JSON error body when there is one. */
export async function errorText(response) {
  return (await errorBody(response)).error;
}

export async function postJson(path, body, init = {}) {
  return fetch(apiUrl(path), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    ...init,
  });
}

/** Resolve when ICE gathering is complete, or after `ms` (a STUN server that never answers). */
export function gathered(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const timer = setTimeout(done, ms);
    pc.addEventListener("icegatheringstatechange", check);
  });
}
