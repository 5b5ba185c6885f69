// Import: a Parley JSON export (or ChatGPT's conversations.json) picked from a file, sent whole to
// POST /api/import. The server takes all of it or none of it; what it says is shown either way.

import { showError, showNotice } from "./ui.js";
import { apiUrl, errorText } from "./util.js";

const $ = (id) => document.getElementById(id);
const view = { button: $("import-button"), file: $("import-file") };

let imported = () => {};

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

async function upload(file) {
  view.button.disabled = true;
  view.button.setAttribute("aria-busy", "true");
  try {
    const response = await fetch(apiUrl("api/import"), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: file,
    });
    if (!response.ok) {
      showError(`Could not import ${file.name}: ${await errorText(response)}`);
      return;
    }
    const body = await response.json();
    const sessions = Array.isArray(body.sessions) ? body.sessions : [];
    showNotice(`Imported ${plural(sessions.length, "conversation")} from ${file.name}.`);
    imported(sessions);
  } catch {
    showError(`Cannot reach the server: ${file.name} was not imported.`);
  } finally {
    view.button.disabled = false;
    view.button.removeAttribute("aria-busy");
    view.button.focus();
  }
}

/** `onImported(sessions)` runs after a successful import with the new conversations. */
export function initImport(onImported) {
  imported = onImported;
  view.button.addEventListener("click", () => view.file.click());
  view.file.addEventListener("change", () => {
    const [file] = view.file.files;
    view.file.value = ""; // the same file can be picked again
    if (file) upload(file);
  });
}
