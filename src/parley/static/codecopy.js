// A copy button on every code block of a rendered reply.

import { showError } from "./ui.js";
import { h, svgIcon } from "./util.js";

const ICON_COPY = "M9 9h11v11H9zM5 15H4V4h11v1";

async function copy(button, code) {
  try {
    await navigator.clipboard.writeText(code.textContent);
    button.lastElementChild.textContent = "Copied";
    setTimeout(() => (button.lastElementChild.textContent = "Copy"), 1500);
  } catch {
    showError("Could not copy to the clipboard.");
  }
}

/** Give each <pre><code> under `root` a copy button (none without a clipboard: plain http). */
export function addCopyButtons(root) {
  if (!navigator.clipboard) return;
  for (const pre of root.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    if (!code || pre.querySelector(".code-copy")) continue;
    const button = h("button", {
      type: "button",
      className: "code-copy",
      title: "Copy the code",
      "aria-label": "Copy the code",
      dataset: { testid: "code-copy" },
    }, svgIcon(ICON_COPY), h("span", {}, "Copy"));
    button.addEventListener("click", () => copy(button, code));
    pre.prepend(button);
  }
}
