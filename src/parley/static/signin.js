// Who this browser is signed in as, and the sign-in page of PARLEY_AUTH=token.
//
// GET /api/me answers with the user (and the server's PARLEY_AUTH mode), or 401 when nobody is
// signed in. Then, with PARLEY_AUTH=token, the page shows a form that exchanges an API token once
// for the HttpOnly, SameSite=Strict session cookie (POST /api/auth/signin) and the app starts;
// behind Cloudflare Access or a trusted proxy the proxy signs people in, so the page only says why
// it was refused. The token goes from the form into that one request: never into storage, the
// URL or the page's state. "Sign out" ends the cookie on the server (POST /api/auth/signout) and
// reloads every tab of this browser, which drops the socket, any call and the conversation on
// screen, and shows the form again.

import { showError } from "./ui.js";
import { apiUrl, errorBody, errorText, postJson, store } from "./util.js";

/** Written on sign-out so this browser's other tabs follow (the `storage` event). */
const SIGNED_OUT_KEY = "parleySignedOut";

const $ = (id) => document.getElementById(id);
const view = {
  app: $("app"),
  page: $("signin"),
  form: $("signin-form"),
  token: $("signin-token"),
  submit: $("signin-submit"),
  error: $("signin-error"),
  proxied: $("signin-proxied"),
  account: $("account"),
  name: $("account-name"),
  signOut: $("signout"),
};

/** GET /api/me: {status, body} (body null unless 200); status 0 when the server is unreachable. */
async function whoAmI() {
  try {
    const response = await fetch(apiUrl("api/me"), { cache: "no-store" });
    if (response.status === 401) return { status: 401, body: await errorBody(response) };
    return { status: response.status, body: response.ok ? await response.json() : null };
  } catch {
    return { status: 0, body: null };
  }
}

/** Whether this server signs people in itself (PARLEY_AUTH=token): only then is there a form. */
async function hasSignInForm() {
  try {
    // An empty exchange changes nothing: 400 (no token) in token mode, 404 in every other mode.
    const response = await postJson("api/auth/signin", {});
    return response.status !== 404;
  } catch {
    return true;
  }
}

function setFormError(text) {
  view.error.textContent = text;
  view.error.hidden = !text;
}

function showPage(on) {
  view.app.hidden = on;
  view.page.hidden = !on;
}

/** The sign-in page until a token is accepted; resolves then. */
function signInPage() {
  showPage(true);
  view.form.hidden = false;
  view.proxied.hidden = true;
  setFormError("");
  view.token.focus();
  return new Promise((resolve) => {
    const onSubmit = async (e) => {
      e.preventDefault();
      const token = view.token.value.trim();
      if (!token) {
        setFormError("Paste an API token first.");
        return;
      }
      view.submit.disabled = true;
      setFormError("");
      try {
        const response = await postJson("api/auth/signin", { token });
        if (response.ok) {
          view.token.value = "";
          view.form.removeEventListener("submit", onSubmit);
          showPage(false);
          resolve();
          return;
        }
        const text = await errorText(response);
        setFormError(response.status === 401 ? `That token did not sign you in: ${text}.` : text);
        view.token.select();
      } catch {
        setFormError("Cannot reach the server: try again.");
      } finally {
        view.submit.disabled = false;
      }
    };
    view.form.addEventListener("submit", onSubmit);
  });
}

/** Behind an authenticating proxy that let this request through unsigned: say so, no form. */
function proxiedPage(reason) {
  showPage(true);
  view.form.hidden = true;
  view.proxied.hidden = false;
  view.proxied.textContent =
    `This server expects its proxy to sign you in, and this request came without a sign-in (${reason}). ` +
    "Open Parley through its proxy's address.";
}

async function signOut() {
  view.signOut.disabled = true;
  try {
    const response = await postJson("api/auth/signout", {});
    if (!response.ok) {
      showError(`Could not sign out: ${await errorText(response)}`);
      return;
    }
  } catch {
    showError("Cannot reach the server: you are still signed in.");
    return;
  } finally {
    view.signOut.disabled = false;
  }
  store(SIGNED_OUT_KEY, String(Date.now()));
  location.reload();
}

function showAccount(me) {
  const mode = me?.auth;
  const name = me?.user?.name;
  if (!mode || mode === "none" || typeof name !== "string") return; // one local user: nothing to show
  view.name.textContent = name;
  view.name.title = `Signed in as ${name}`;
  view.signOut.hidden = mode !== "token"; // behind a proxy, the proxy signs out
  view.account.hidden = false;
  if (mode === "token") document.addEventListener("visibilitychange", recheck);
}

/** A tab shown again after a while: if its sign-in ended meanwhile (expired, revoked, signed out
 * elsewhere), go back to the form instead of retrying a socket the server keeps refusing. */
async function recheck() {
  if (document.visibilityState !== "visible") return;
  if ((await whoAmI()).status === 401) location.reload();
}

/**
 * Resolve once this browser is signed in (at once when the server needs no sign-in, or cannot
 * be reached: the connection's own retries and status pill take over from there).
 */
export async function whenSignedIn() {
  view.signOut.addEventListener("click", signOut);
  window.addEventListener("storage", (e) => {
    if (e.key === SIGNED_OUT_KEY && e.newValue) location.reload();
  });
  for (;;) {
    const me = await whoAmI();
    if (me.status !== 401) {
      showAccount(me.body);
      return;
    }
    if (!(await hasSignInForm())) {
      proxiedPage(me.body?.error ?? "401");
      return new Promise(() => {}); // nothing to do here until the page is opened the right way
    }
    await signInPage();
  }
}
