// Markdown to DOM for chat replies.
//
// Safety comes from construction, not from filtering: every node is made with createElement or
// createTextNode and every piece of model text lands in textContent, so markup in a message can
// only ever show as text. The one attribute built from message text is a link's href, and only
// after its scheme is checked against SAFE_SCHEMES.
//
// It covers what chat models write: paragraphs, line breaks, headings, emphasis, strikethrough,
// inline code, fenced code, lists (nested), blockquotes, rules, tables and links. Unclosed
// constructs (a reply still streaming in) render as text until they close.

const SAFE_SCHEMES = new Set(["http:", "https:", "mailto:"]);

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const LIST_ITEM = /^( *)([-*+]|\d{1,9}[.)])([ \t]+(.*))?$/;
const TABLE_RULE = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
const PUNCTUATION = /[!-/:-@[-`{-~]/;

/** Render markdown `source` as a DocumentFragment. */
export function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  const lines = String(source ?? "").replace(/\r\n?/g, "\n").split("\n");
  for (const node of parseBlocks(lines)) fragment.appendChild(node);
  return fragment;
}

/** A URL fit for an href, or null: absolute, and one of the schemes we let through. */
export function safeUrl(raw) {
  const text = String(raw).trim();
  // Browsers drop tabs and newlines inside URLs ("java\tscript:"), so judge what they would load.
  if (/[\u0000-\u001f\u007f\s]/.test(text)) return null;
  let url;
  try {
    url = new URL(text);
  } catch {
    return null; // relative or malformed: never guess a base for model-written links
  }
  return SAFE_SCHEMES.has(url.protocol) ? url.href : null;
}

function el(tag, ...children) {
  const node = document.createElement(tag);
  for (const child of children) {
    node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function indentOf(line) {
  return line.length - line.trimStart().length;
}

function isBlank(line) {
  return line.trim() === "";
}

// -- blocks -----------------------------------------------------------------------------------

function startsBlock(line) {
  if (FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line)) return true;
  const item = LIST_ITEM.exec(line);
  // Only "1." may interrupt a paragraph, so "in 2024. Then" never becomes a list mid-sentence.
  return Boolean(item && item[3] && (!/\d/.test(item[2]) || /^1[.)]$/.test(item[2])));
}

function parseBlocks(lines) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) {
      i++;
      continue;
    }
    let match;
    if ((match = FENCE.exec(line))) {
      i = parseFence(lines, i, match, out);
    } else if ((match = HEADING.exec(line))) {
      out.push(el(`h${match[1].length}`, ...parseInline(match[2] ?? "")));
      i++;
    } else if (RULE.test(line)) {
      out.push(el("hr"));
      i++;
    } else if (QUOTE.test(line)) {
      i = parseQuote(lines, i, out);
    } else if (LIST_ITEM.test(line) && LIST_ITEM.exec(line)[3]) {
      i = parseList(lines, i, out);
    } else if (isTableStart(lines, i)) {
      i = parseTable(lines, i, out);
    } else {
      i = parseParagraph(lines, i, out);
    }
  }
  return out;
}

function parseFence(lines, start, match, out) {
  const [, fence, info] = match;
  const indent = indentOf(lines[start]);
  const body = [];
  let i = start + 1;
  for (; i < lines.length; i++) {
    const close = lines[i].trim();
    if (close.startsWith(fence[0].repeat(fence.length)) && /^(`+|~+)$/.test(close) && close[0] === fence[0]) {
      i++;
      break;
    }
    // Strip up to the opening fence's indent, as a fence nested in a list item is indented.
    body.push(lines[i].slice(Math.min(indent, indentOf(lines[i]))));
  }
  const code = el("code", body.join("\n"));
  const lang = info.replace(/[^\w+#.-]/g, "").slice(0, 32);
  if (lang) {
    code.className = `language-${lang}`;
  }
  const pre = el("pre", code);
  if (lang) pre.dataset.lang = lang;
  out.push(pre);
  return i;
}

function parseQuote(lines, start, out) {
  const inner = [];
  let i = start;
  for (; i < lines.length; i++) {
    const match = QUOTE.exec(lines[i]);
    if (match) {
      inner.push(match[1]);
    } else if (!isBlank(lines[i]) && !startsBlock(lines[i]) && inner.length && !isBlank(inner.at(-1))) {
      inner.push(lines[i]); // a lazy continuation of the quoted paragraph
    } else {
      break;
    }
  }
  out.push(el("blockquote", ...parseBlocks(inner)));
  return i;
}

function parseList(lines, start, out) {
  const first = LIST_ITEM.exec(lines[start]);
  const baseIndent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const delimiter = first[2].at(-1);
  const list = el(ordered ? "ol" : "ul");
  if (ordered) {
    const number = parseInt(first[2], 10);
    if (number !== 1) list.start = number;
  }
  const items = [];
  let loose = false;
  let i = start;
  while (i < lines.length) {
    const match = LIST_ITEM.exec(lines[i]);
    const sameKind = match && match[3] && /\d/.test(match[2]) === ordered && match[2].at(-1) === delimiter;
    if (!sameKind || match[1].length < baseIndent || match[1].length > baseIndent + 3) break;
    const contentIndent = match[1].length + match[2].length + 1;
    const body = [match[4] ?? ""];
    i++;
    while (i < lines.length) {
      const line = lines[i];
      if (isBlank(line)) {
        let next = i + 1;
        while (next < lines.length && isBlank(lines[next])) next++;
        if (next < lines.length && indentOf(lines[next]) >= contentIndent) {
          body.push(...lines.slice(i, next).map(() => ""));
          loose = true;
          i = next;
          continue;
        }
        const following = next < lines.length ? LIST_ITEM.exec(lines[next]) : null;
        if (following && following[3] && following[1].length === baseIndent) loose = true;
        break;
      }
      const nested = LIST_ITEM.exec(line);
      if (indentOf(line) >= contentIndent || (nested && nested[3] && indentOf(line) > baseIndent)) {
        body.push(line.slice(Math.min(contentIndent, indentOf(line))));
      } else if (nested && nested[3]) {
        break; // the next item of this list, or the start of another list
      } else if (!startsBlock(line) && !isBlank(body.at(-1))) {
        body.push(line.trimStart()); // lazy continuation of the item's paragraph
      } else {
        break;
      }
      i++;
    }
    items.push(body);
    while (i < lines.length && isBlank(lines[i])) {
      const next = lines.slice(i).findIndex((l) => !isBlank(l));
      if (next < 0) {
        i = lines.length;
        break;
      }
      const candidate = LIST_ITEM.exec(lines[i + next]);
      if (candidate && candidate[3] && candidate[1].length === baseIndent) i += next;
      else break;
    }
  }
  for (const body of items) {
    const li = el("li", ...parseBlocks(body));
    if (!loose) {
      // A tight list keeps its text directly in the <li>, without paragraph spacing.
      for (const p of [...li.children].filter((c) => c.tagName === "P")) p.replaceWith(...p.childNodes);
    }
    list.appendChild(li);
  }
  out.push(list);
  return i;
}

function isTableStart(lines, i) {
  const rule = lines[i + 1];
  return lines[i].includes("|") && rule !== undefined && rule.includes("|") && TABLE_RULE.test(rule);
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  const cells = [];
  let cell = "";
  let inCode = false;
  for (let i = 0; i < row.length; i++) {
    const ch = row[i];
    if (ch === "\\" && row[i + 1] === "|") {
      cell += "|";
      i++;
    } else if (ch === "`") {
      inCode = !inCode;
      cell += ch;
    } else if (ch === "|" && !inCode) {
      cells.push(cell.trim());
      cell = "";
    } else {
      cell += ch;
    }
  }
  cells.push(cell.trim());
  return cells;
}

function parseTable(lines, start, out) {
  const header = splitRow(lines[start]);
  const aligns = splitRow(lines[start + 1]).map((spec) => {
    if (spec.startsWith(":") && spec.endsWith(":")) return "center";
    if (spec.endsWith(":")) return "right";
    return spec.startsWith(":") ? "left" : "";
  });
  const cell = (tag, text, col) => {
    const node = el(tag, ...parseInline(text));
    if (aligns[col]) node.style.textAlign = aligns[col];
    return node;
  };
  const head = el("tr", ...header.map((text, col) => cell("th", text, col)));
  const body = el("tbody");
  let i = start + 2;
  for (; i < lines.length && !isBlank(lines[i]) && lines[i].includes("|"); i++) {
    const cells = splitRow(lines[i]);
    body.appendChild(el("tr", ...header.map((_, col) => cell("td", cells[col] ?? "", col))));
  }
  const wrap = el("div", el("table", el("thead", head), body));
  wrap.className = "table-wrap"; // wide tables scroll inside the bubble, never the page
  out.push(wrap);
  return i;
}

function parseParagraph(lines, start, out) {
  const text = [lines[start].trim()];
  let i = start + 1;
  for (; i < lines.length && !isBlank(lines[i]) && !startsBlock(lines[i]); i++) {
    if (isTableStart(lines, i)) break;
    text.push(lines[i].trim());
  }
  out.push(el("p", ...parseInline(text.join("\n"))));
  return i;
}

// -- inline -----------------------------------------------------------------------------------

function isWordChar(ch) {
  return ch !== undefined && /[\p{L}\p{N}]/u.test(ch);
}

function isSpace(ch) {
  return ch === undefined || /\s/.test(ch);
}

/** The index just past the code span opened by the backtick run at `start`, or -1. */
function codeSpanEnd(text, start) {
  let run = 0;
  while (text[start + run] === "`") run++;
  let i = start + run;
  while ((i = text.indexOf("`", i)) >= 0) {
    let close = 0;
    while (text[i + close] === "`") close++;
    if (close === run) return i + close;
    i += close;
  }
  return -1;
}

/** The index of the delimiter closing an emphasis opened at `from`, skipping code spans. */
function findClose(text, from, delim) {
  const single = delim.length === 1;
  for (let i = from; i < text.length; i++) {
    const ch = text[i];
    if (ch === "\\") {
      i++;
      continue;
    }
    if (ch === "`") {
      const end = codeSpanEnd(text, i);
      if (end > 0) {
        i = end - 1;
        continue;
      }
    }
    if (!text.startsWith(delim, i)) continue;
    if (single && text[i + 1] === delim) {
      // "**" inside "*...*" belongs to a nested strong, not to us
      i++;
      continue;
    }
    if (isSpace(text[i - 1])) continue;
    if (delim[0] === "_" && isWordChar(text[i + delim.length])) continue;
    return i;
  }
  return -1;
}

const EMPHASIS = [
  ["***", (inner) => el("strong", el("em", ...inner))],
  ["___", (inner) => el("strong", el("em", ...inner))],
  ["**", (inner) => el("strong", ...inner)],
  ["__", (inner) => el("strong", ...inner)],
  ["~~", (inner) => el("del", ...inner)],
  ["*", (inner) => el("em", ...inner)],
  ["_", (inner) => el("em", ...inner)],
];

function tryEmphasis(text, i, inLink) {
  for (const [delim, build] of EMPHASIS) {
    if (!text.startsWith(delim, i)) continue;
    const after = text[i + delim.length];
    if (isSpace(after) || after === delim[0]) continue;
    if (delim[0] === "_" && isWordChar(text[i - 1])) continue; // snake_case stays as written
    const close = findClose(text, i + delim.length + 1, delim);
    if (close < 0) continue;
    const inner = parseInline(text.slice(i + delim.length, close), inLink);
    return { node: build(inner), end: close + delim.length };
  }
  return null;
}

/** `[label](url "title")` at i: the parts and where it ends, or null. */
function scanLink(text, i) {
  let depth = 0;
  let j = i;
  for (; j < text.length; j++) {
    const ch = text[j];
    if (ch === "\\") j++;
    else if (ch === "`") {
      const end = codeSpanEnd(text, j);
      if (end > 0) j = end - 1;
    } else if (ch === "[") depth++;
    else if (ch === "]" && --depth === 0) break;
  }
  if (j >= text.length || text[j + 1] !== "(") return null;
  const label = text.slice(i + 1, j);
  let k = j + 2;
  while (text[k] === " ") k++;
  let url = "";
  if (text[k] === "<") {
    const end = text.indexOf(">", k);
    if (end < 0) return null;
    url = text.slice(k + 1, end);
    k = end + 1;
  } else {
    let parens = 0;
    for (; k < text.length; k++) {
      const ch = text[k];
      if (/\s/.test(ch)) break;
      if (ch === "(") parens++;
      else if (ch === ")") {
        if (parens === 0) break;
        parens--;
      }
      url += ch;
    }
  }
  while (text[k] === " ") k++;
  let title = "";
  const quote = text[k];
  if (quote === '"' || quote === "'") {
    const end = text.indexOf(quote, k + 1);
    if (end < 0) return null;
    title = text.slice(k + 1, end);
    k = end + 1;
    while (text[k] === " ") k++;
  }
  if (text[k] !== ")") return null;
  return { label, url, title, end: k + 1 };
}

function makeLink(href, children, title) {
  const a = el("a", ...children);
  a.href = href;
  a.rel = "noopener noreferrer";
  a.target = "_blank";
  if (title) a.title = title;
  return a;
}

const BARE_URL = /^(?:https?:\/\/|mailto:)[^\s<>"]+/i;

/** Parse inline markdown into an array of nodes. */
function parseInline(text, inLink = false) {
  const nodes = [];
  let buffer = "";
  const flush = () => {
    if (buffer) nodes.push(document.createTextNode(buffer));
    buffer = "";
  };
  const push = (node) => {
    flush();
    nodes.push(node);
  };
  for (let i = 0; i < text.length; ) {
    const ch = text[i];
    if (ch === "\\" && PUNCTUATION.test(text[i + 1] ?? "")) {
      buffer += text[i + 1];
      i += 2;
      continue;
    }
    if (ch === "\\" && text[i + 1] === "\n") {
      push(el("br"));
      i += 2;
      continue;
    }
    if (ch === "\n") {
      buffer = buffer.replace(/ +$/, "");
      push(el("br"));
      i++;
      continue;
    }
    if (ch === "`") {
      const end = codeSpanEnd(text, i);
      if (end > 0) {
        let run = 0;
        while (text[i + run] === "`") run++;
        let code = text.slice(i + run, end - run).replace(/\n/g, " ");
        if (/^ .*[^ ].* $/.test(code)) code = code.slice(1, -1);
        push(el("code", code));
        i = end;
        continue;
      }
      while (text[i] === "`") buffer += text[i++];
      continue;
    }
    if (ch === "*" || ch === "_" || ch === "~") {
      const found = tryEmphasis(text, i, inLink);
      if (found) {
        push(found.node);
        i = found.end;
        continue;
      }
      // A run that opens nothing is text; consume it whole so "***" is not retried char by char.
      const start = i;
      while (text[i] === ch) i++;
      buffer += text.slice(start, i);
      continue;
    }
    if ((ch === "[" || (ch === "!" && text[i + 1] === "[")) && !inLink) {
      const image = ch === "!";
      const link = scanLink(text, image ? i + 1 : i);
      if (link) {
        const href = safeUrl(link.url);
        const source = text.slice(i, link.end);
        if (href === null) {
          buffer += source; // an unsafe or relative target is shown as the text it was
        } else if (image) {
          // Remote images are not fetched (tracking pixels, mixed content): link to them instead.
          push(makeLink(href, [link.label || href], link.title));
        } else {
          push(makeLink(href, parseInline(link.label, true), link.title));
        }
        i = link.end;
        continue;
      }
    }
    if (ch === "<" && !inLink) {
      const end = text.indexOf(">", i);
      const inner = end > 0 ? text.slice(i + 1, end) : "";
      const href = inner && safeUrl(inner);
      if (href) {
        push(makeLink(href, [inner]));
        i = end + 1;
        continue;
      }
    }
    if ((ch === "h" || ch === "H" || ch === "m" || ch === "M") && !inLink && !isWordChar(text[i - 1])) {
      const match = BARE_URL.exec(text.slice(i));
      if (match) {
        // Sentence punctuation after a URL is not part of it; a ")" only when unbalanced.
        let url = match[0].replace(/[.,:;!?'"*_~]+$/, "");
        while (url.endsWith(")") && (url.match(/\(/g) ?? []).length < (url.match(/\)/g) ?? []).length) {
          url = url.slice(0, -1);
        }
        const href = safeUrl(url);
        if (href && url.length > match[0].indexOf(":") + 1) {
          push(makeLink(href, [url]));
          i += url.length;
          continue;
        }
      }
    }
    buffer += ch;
    i++;
  }
  flush();
  return nodes;
}
