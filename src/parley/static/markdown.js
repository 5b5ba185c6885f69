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
//
// Model text is untrusted input, so the renderer has to stay cheap on any of it: nesting is bounded
// (deeper markers are text, so no reply can build a DOM deep enough to take the tab down), no regex
// can backtrack over a whole line, and every scan forward for a closing delimiter either remembers
// that it failed or is capped, so a reply of n characters costs O(n) per nesting level.

const SAFE_SCHEMES = new Set(["http:", "https:", "mailto:"]);

/** Blockquotes and lists nest at most this deep, and emphasis and links inside one another too. */
export const MAX_DEPTH = 16;
/** Longer link targets, titles and autolinks are text (a scan for their end stops here). */
const MAX_URL = 4096;
/** A table wider than this is text: every row is padded to the header, so width times rows cells. */
const MAX_COLUMNS = 64;

const FENCE_OPEN = /^ {0,3}(`{3,}|~{3,})/;
const HEADING_OPEN = /^ {0,3}(#{1,6})(?=[ \t]|$)/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const LIST_ITEM = /^( *)([-*+]|\d{1,9}[.)])([ \t]+(.*))?$/;
const TABLE_RULE = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
const PUNCTUATION = /[!-/:-@[-`{-~]/;

/** Render markdown `source` as a DocumentFragment. */
export function renderMarkdown(source) {
  const lines = String(source ?? "").replace(/\r\n?/g, "\n").split("\n");
  return appendAll(document.createDocumentFragment(), parseBlocks(lines, 0));
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

// Children are appended one by one: spreading them into a call's arguments throws a RangeError
// once a reply has enough of them (a paragraph of 200,000 line breaks).
function appendAll(node, children) {
  for (const child of children) node.appendChild(child);
  return node;
}

function indentOf(line) {
  return line.length - line.trimStart().length;
}

function isBlank(line) {
  return line.trim() === "";
}

// -- blocks -----------------------------------------------------------------------------------

/** A fence's character run and info string, or null. Parsed by hand: the regex it replaces
 * backtracked over the whole line when the line held a stray backtick. */
function fenceOf(line) {
  const open = FENCE_OPEN.exec(line);
  if (!open) return null;
  const rest = line.slice(open[0].length);
  if (rest.includes("`")) return null; // "```js`" is inline code, not a fence
  return [open[0], open[1], rest.trim().split(/[ \t]/, 1)[0]];
}

/** A heading's level and text without its closing #s, or null. */
function headingOf(line) {
  const open = HEADING_OPEN.exec(line);
  if (!open) return null;
  let text = line.slice(open[0].length).trim();
  let end = text.length;
  while (end > 0 && text[end - 1] === "#") end--;
  if (end === 0) text = "";
  else if (end < text.length && (text[end - 1] === " " || text[end - 1] === "\t")) text = text.slice(0, end).trimEnd();
  return [open[1].length, text];
}

/** "---", "* * *", "___": three or more of one of -*_ and nothing else but spaces. */
function isRule(line) {
  if (indentOf(line) > 3) return false;
  const marks = line.replace(/[ \t]/g, "");
  return marks.length >= 3 && "-*_".includes(marks[0]) && marks === marks[0].repeat(marks.length);
}

function startsBlock(line) {
  if (fenceOf(line) || headingOf(line) || isRule(line) || QUOTE.test(line)) return true;
  const item = LIST_ITEM.exec(line);
  // Only "1." may interrupt a paragraph, so "in 2024. Then" never becomes a list mid-sentence.
  return Boolean(item && item[3] && (!/\d/.test(item[2]) || /^1[.)]$/.test(item[2])));
}

/** Blocks of `lines`, which sit inside `depth` quotes and list items. */
function parseBlocks(lines, depth) {
  const out = [];
  // Past the bound a quote or list marker is text: a ">" x 3000 reply is one paragraph, not 3000
  // nested blockquotes (a DOM that deep crashed the tab, on every later load of the session).
  const nest = depth < MAX_DEPTH;
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) {
      i++;
      continue;
    }
    let match;
    if ((match = fenceOf(line))) {
      i = parseFence(lines, i, match, out);
    } else if ((match = headingOf(line))) {
      out.push(appendAll(el(`h${match[0]}`), parseInline(match[1])));
      i++;
    } else if (isRule(line)) {
      out.push(el("hr"));
      i++;
    } else if (nest && QUOTE.test(line)) {
      i = parseQuote(lines, i, out, depth);
    } else if (nest && LIST_ITEM.exec(line)?.[3]) {
      i = parseList(lines, i, out, depth);
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

function parseQuote(lines, start, out, depth) {
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
  out.push(appendAll(el("blockquote"), parseBlocks(inner, depth + 1)));
  return i;
}

function parseList(lines, start, out, depth) {
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
          for (; i < next; i++) body.push("");
          loose = true;
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
    if (i < lines.length && isBlank(lines[i])) {
      let next = i + 1;
      while (next < lines.length && isBlank(lines[next])) next++;
      if (next === lines.length) {
        i = next;
      } else {
        const candidate = LIST_ITEM.exec(lines[next]);
        if (candidate && candidate[3] && candidate[1].length === baseIndent) i = next;
      }
    }
  }
  for (const body of items) {
    const li = appendAll(el("li"), parseBlocks(body, depth + 1));
    if (!loose) {
      // A tight list keeps its text directly in the <li>, without paragraph spacing.
      for (const p of [...li.children].filter((c) => c.tagName === "P")) {
        while (p.firstChild) li.insertBefore(p.firstChild, p);
        p.remove();
      }
    }
    list.appendChild(li);
  }
  out.push(list);
  return i;
}

function isTableStart(lines, i) {
  const rule = lines[i + 1];
  if (!lines[i].includes("|") || rule === undefined || !rule.includes("|") || !TABLE_RULE.test(rule)) return false;
  return splitRow(lines[i]).length <= MAX_COLUMNS;
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
    const node = appendAll(el(tag), parseInline(text));
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
  out.push(appendAll(el("p"), parseInline(text.join("\n"))));
  return i;
}

// -- inline -----------------------------------------------------------------------------------

function isWordChar(ch) {
  return ch !== undefined && /[\p{L}\p{N}]/u.test(ch);
}

function isSpace(ch) {
  return ch === undefined || /\s/.test(ch);
}

/**
 * What one parseInline call has learnt about its text. A scan forward for a closer that finds
 * none would find none from any later start either, so it is remembered and never repeated: the
 * renderer this replaces rescanned to the end from every unmatched "_", "[" or "`" (quadratic:
 * "_a _" x 10,000 took 5.6 s).
 */
class Scan {
  constructor(text) {
    this.text = text;
    this.codeFailed = new Map(); // backtick run length -> earliest start whose close was not found
    this.closeFailed = new Map(); // emphasis delimiter -> earliest start whose close was not found
    this.brackets = null; // "[" index -> the index of its "]", built on first use
    this.nextAt = new Map(); // char -> {from, at}: the last indexOf answer, reused while it holds
  }

  /** text.indexOf(ch, from), answered again without a scan while `from` is before that answer. */
  indexOf(ch, from) {
    const known = this.nextAt.get(ch);
    if (known && known.from <= from && (known.at < 0 || from <= known.at)) return known.at;
    const at = this.text.indexOf(ch, from);
    this.nextAt.set(ch, { from, at });
    return at;
  }

  /** The index just past the code span opened by the backtick run at `start`, or -1. */
  codeSpanEnd(start) {
    const text = this.text;
    let run = 0;
    while (text[start + run] === "`") run++;
    if (this.codeFailed.get(run) <= start) return -1;
    let i = start + run;
    while ((i = text.indexOf("`", i)) >= 0) {
      let close = 0;
      while (text[i + close] === "`") close++;
      if (close === run) return i + close;
      i += close;
    }
    this.codeFailed.set(run, start);
    return -1;
  }

  /** Where the backtick run at `start` ends: past its code span, or past the run itself. */
  skipBackticks(start) {
    const end = this.codeSpanEnd(start);
    if (end > 0) return end;
    let i = start;
    while (this.text[i] === "`") i++;
    return i;
  }

  /** The "]" matching the "[" at `open`, or -1; all pairs are matched in one pass, on a stack. */
  closingBracket(open) {
    if (!this.brackets) {
      const text = this.text;
      this.brackets = new Map();
      const stack = [];
      for (let i = 0; i < text.length; ) {
        const ch = text[i];
        if (ch === "\\") i += 2;
        else if (ch === "`") i = this.skipBackticks(i);
        else {
          if (ch === "[") stack.push(i);
          else if (ch === "]" && stack.length) this.brackets.set(stack.pop(), i);
          i++;
        }
      }
    }
    return this.brackets.get(open) ?? -1;
  }

  /** The index of the delimiter closing an emphasis opened at `from`, skipping code spans. */
  findClose(from, delim) {
    if (this.closeFailed.get(delim) <= from) return -1;
    const text = this.text;
    const single = delim.length === 1;
    for (let i = from; i < text.length; i++) {
      const ch = text[i];
      if (ch === "\\") {
        i++;
        continue;
      }
      if (ch === "`") {
        i = this.skipBackticks(i) - 1;
        continue;
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
    this.closeFailed.set(delim, from);
    return -1;
  }
}

const EMPHASIS = [
  ["***", (inner) => el("strong", appendAll(el("em"), inner))],
  ["___", (inner) => el("strong", appendAll(el("em"), inner))],
  ["**", (inner) => appendAll(el("strong"), inner)],
  ["__", (inner) => appendAll(el("strong"), inner)],
  ["~~", (inner) => appendAll(el("del"), inner)],
  ["*", (inner) => appendAll(el("em"), inner)],
  ["_", (inner) => appendAll(el("em"), inner)],
];

function tryEmphasis(scan, i, inLink, depth) {
  const text = scan.text;
  for (const [delim, build] of EMPHASIS) {
    if (!text.startsWith(delim, i)) continue;
    const after = text[i + delim.length];
    if (isSpace(after) || after === delim[0]) continue;
    if (delim[0] === "_" && isWordChar(text[i - 1])) continue; // snake_case stays as written
    const close = scan.findClose(i + delim.length + 1, delim);
    if (close < 0) continue;
    const inner = parseInline(text.slice(i + delim.length, close), inLink, depth + 1);
    return { node: build(inner), end: close + delim.length };
  }
  return null;
}

/** `[label](url "title")` at i: the parts and where it ends, or null. */
function scanLink(scan, i) {
  const text = scan.text;
  const j = scan.closingBracket(i);
  if (j < 0 || text[j + 1] !== "(") return null;
  const label = text.slice(i + 1, j);
  let k = j + 2;
  while (text[k] === " ") k++;
  let url = "";
  if (text[k] === "<") {
    const end = scan.indexOf(">", k);
    if (end < 0 || end - k > MAX_URL) return null;
    url = text.slice(k + 1, end);
    k = end + 1;
  } else {
    // Capped: "[a](" x 5000 would otherwise scan to the end of the text from every "[".
    const limit = Math.min(text.length, k + MAX_URL);
    const start = k;
    let parens = 0;
    for (; k < limit; k++) {
      const ch = text[k];
      if (ch === " " || ch === "\t" || ch === "\n") break;
      if (ch === "(") parens++;
      else if (ch === ")") {
        if (parens === 0) break;
        parens--;
      }
    }
    if (k === limit && limit < text.length) return null;
    url = text.slice(start, k);
  }
  while (text[k] === " ") k++;
  let title = "";
  const quote = text[k];
  if (quote === '"' || quote === "'") {
    const end = scan.indexOf(quote, k + 1);
    if (end < 0 || end - k > MAX_URL) return null;
    title = text.slice(k + 1, end);
    k = end + 1;
    while (text[k] === " ") k++;
  }
  if (text[k] !== ")") return null;
  return { label, url, title, end: k + 1 };
}

function makeLink(href, children, title) {
  const a = appendAll(el("a"), children);
  a.href = href;
  a.rel = "noopener noreferrer";
  a.target = "_blank";
  if (title) a.title = title;
  return a;
}

// Sticky, so it matches at one index without copying the rest of the text for every "h".
const BARE_URL = /(?:https?:\/\/|mailto:)[^\s<>"]+/iy;
const URL_TRAILER = ".,:;!?'\"*_~";

/** A bare URL without the sentence punctuation after it, and a ")" only when unbalanced. */
function trimBareUrl(url) {
  let end = url.length;
  while (end > 0 && URL_TRAILER.includes(url[end - 1])) end--;
  let open = 0;
  let close = 0;
  for (let i = 0; i < end; i++) {
    if (url[i] === "(") open++;
    else if (url[i] === ")") close++;
  }
  while (end > 0 && url[end - 1] === ")" && open < close) {
    end--;
    close--;
  }
  return url.slice(0, end);
}

function trimTrailingSpaces(text) {
  let end = text.length;
  while (end > 0 && text[end - 1] === " ") end--;
  return text.slice(0, end);
}

/** Parse inline markdown into an array of nodes; `depth` counts the emphasis and links around it. */
function parseInline(text, inLink = false, depth = 0) {
  const scan = new Scan(text);
  // Past the bound, emphasis and links are text (their recursion is what the bound stops).
  const nest = depth < MAX_DEPTH;
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
      buffer = trimTrailingSpaces(buffer);
      push(el("br"));
      i++;
      continue;
    }
    if (ch === "`") {
      const end = scan.codeSpanEnd(i);
      if (end > 0) {
        let run = 0;
        while (text[i + run] === "`") run++;
        let code = text.slice(i + run, end - run).replace(/\n/g, " ");
        // One space each side is padding, unless the span is nothing but spaces.
        if (code.length > 2 && code[0] === " " && code.at(-1) === " " && code.trim()) code = code.slice(1, -1);
        push(el("code", code));
        i = end;
        continue;
      }
      while (text[i] === "`") buffer += text[i++];
      continue;
    }
    if (ch === "*" || ch === "_" || ch === "~") {
      const found = nest ? tryEmphasis(scan, i, inLink, depth) : null;
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
    if ((ch === "[" || (ch === "!" && text[i + 1] === "[")) && !inLink && nest) {
      const image = ch === "!";
      const link = scanLink(scan, image ? i + 1 : i);
      if (link) {
        const href = safeUrl(link.url);
        const source = text.slice(i, link.end);
        if (href === null) {
          buffer += source; // an unsafe or relative target is shown as the text it was
        } else if (image) {
          // Remote images are not fetched (tracking pixels, mixed content): link to them instead.
          push(makeLink(href, [document.createTextNode(link.label || href)], link.title));
        } else {
          push(makeLink(href, parseInline(link.label, true, depth + 1), link.title));
        }
        i = link.end;
        continue;
      }
    }
    if (ch === "<" && !inLink) {
      // An autolink holds no "<", so the text each one judges is disjoint from the next one's.
      const end = scan.indexOf(">", i);
      const next = scan.indexOf("<", i + 1);
      const inner = end > 0 && end - i <= MAX_URL && (next < 0 || next > end) ? text.slice(i + 1, end) : "";
      const href = inner && safeUrl(inner);
      if (href) {
        push(makeLink(href, [document.createTextNode(inner)]));
        i = end + 1;
        continue;
      }
    }
    if ((ch === "h" || ch === "H" || ch === "m" || ch === "M") && !inLink && !isWordChar(text[i - 1])) {
      BARE_URL.lastIndex = i;
      const match = BARE_URL.exec(text);
      if (match) {
        const url = trimBareUrl(match[0]);
        const href = url.length > match[0].indexOf(":") + 1 ? safeUrl(url) : null;
        if (href) {
          push(makeLink(href, [document.createTextNode(url)]));
          i += url.length;
        } else {
          // Not a link: the whole run is text, or every "http:" inside it would be tried again.
          buffer += match[0];
          i += match[0].length;
        }
        continue;
      }
    }
    buffer += ch;
    i++;
  }
  flush();
  return nodes;
}
