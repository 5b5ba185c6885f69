// Cutting a reply into speakable pieces while it streams, and turning markdown into plain speech.
//
// A piece ends at . ! ? ; : followed by a space (so "3.14", "a:b" and "?!" never end one), at their
// CJK forms (which need no space), or at a line break. A period after a known abbreviation
// ("e.g.", "Dr."), a single letter ("J. Smith") or a list number at the start of a line ("1.") is
// not an end. A period at the very end of the text so far waits for the next chunk, which tells
// "3." from "3.14". Fenced code is shown, never read.

import { renderMarkdown } from "./markdown.js";

const ENDS = new Set([".", "!", "?", ";", ":"]);
const CJK_ENDS = new Set(["。", "！", "？", "；", "：", "．", "｡"]);
// What may follow an end before the space: quotes, brackets, emphasis markers.
const CLOSERS = new Set(['"', "'", "”", "’", "»", ")", "]", "*", "_", "~", "`", "」", "』", "）"]);
const ABBREVIATIONS = new Set([
  "e.g", "i.e", "cf", "vs", "approx", "dr", "mr", "mrs", "ms", "prof", "sr", "jr", "st", "mt",
  "fig", "inc", "ltd", "z.b", "d.h", "bzw", "usw", "ggf", "evtl", "ca", "nr", "p.ex", "etc.pp",
]);
const FENCE = /^\s*(```|~~~)/;
// A run-on piece this long is cut at its next comma, so speech never waits too long.
const LONG_PIECE = 240;

function isSpace(ch) {
  return ch === " " || ch === "\t" || ch === "\n" || ch === "\r" || ch === "\u00a0";
}

/** Is the period at `i` part of an abbreviation, an initial or a list number rather than an end? */
function abbreviationAt(text, i) {
  let start = i;
  while (start > 0 && !isSpace(text[start - 1])) start--;
  const word = text.slice(start, i).replace(/^[("'“‘*_]+/, "");
  if (ABBREVIATIONS.has(word.toLowerCase())) return true;
  if (/^\p{L}$/u.test(word)) return true; // an initial: "J. R. R. Tolkien"
  if (/^\d{1,9}$/.test(word)) {
    const lineStart = text.lastIndexOf("\n", start - 1) + 1;
    return text.slice(lineStart, start).trim() === ""; // "1. item" starts a list line
  }
  return false;
}

/** Feeds on the growing text of one reply and hands out each piece once it is complete. */
export class SentenceSplitter {
  #text = "";
  #pos = 0; // where the next piece starts
  #lineStart = true; // does the next piece start a line (only such a piece can open a fence)?
  #inCode = false;

  /**
   * `text` is the whole reply so far (each call extends the last). Returns the plain text of
   * the pieces it completed; with `final`, the rest of the text too.
   */
  push(text, final = false) {
    // A reply that does not extend what came before (a rewrite): carry on from the same offset.
    this.#text = String(text ?? "");
    const out = [];
    const t = this.#text;
    let i = Math.min(this.#pos, t.length);
    for (; i < t.length; i++) {
      const ch = t[i];
      if (ch === "\n") {
        this.#cut(i + 1, true, out);
        continue;
      }
      if (CJK_ENDS.has(ch)) {
        let j = i + 1;
        while (j < t.length && CLOSERS.has(t[j])) j++;
        this.#cut(j, false, out);
        i = j - 1;
        continue;
      }
      const long = ch === "," && i - this.#pos > LONG_PIECE;
      if (!ENDS.has(ch) && !long) continue;
      let j = i + 1;
      while (j < t.length && CLOSERS.has(t[j])) j++;
      if (j >= t.length) break; // the next chunk decides: "3." could become "3.14"
      if (!isSpace(t[j])) continue;
      if (ch === "." && abbreviationAt(t, i)) continue;
      this.#cut(j, false, out);
      i = j - 1;
    }
    if (final && this.#pos < t.length) this.#cut(t.length, false, out);
    return out;
  }

  #cut(end, newline, out) {
    const piece = this.#text.slice(this.#pos, end);
    const startsLine = this.#lineStart;
    this.#pos = end;
    this.#lineStart = newline;
    if (startsLine && FENCE.test(piece)) {
      this.#inCode = !this.#inCode;
      return;
    }
    if (this.#inCode) return;
    const plain = plainText(piece);
    if (plain) out.push(plain);
  }
}

/** What a voice should say for a piece of markdown: its visible text, without code blocks or URLs. */
export function plainText(markdown) {
  const box = document.createElement("div");
  box.append(renderMarkdown(markdown));
  for (const pre of box.querySelectorAll("pre")) pre.remove();
  for (const br of box.querySelectorAll("br")) br.replaceWith(" ");
  for (const block of box.querySelectorAll("p, li, h1, h2, h3, h4, h5, h6, td, th, blockquote")) {
    block.append(" "); // blocks would otherwise run together: "Title" + "Text" -> "TitleText"
  }
  let text = box.textContent;
  // A link's address is noise when spoken; its host says enough.
  text = text.replace(/\bhttps?:\/\/([^\s/?#]+)[^\s]*/g, "$1");
  if (text.includes("|")) text = text.split("|").map((s) => s.trim()).filter(Boolean).join(", ");
  text = text.replace(/[*`~]+/g, "").replace(/\s+/g, " ").trim();
  return /[\p{L}\p{N}]/u.test(text) ? text : "";
}

/** The plain text of a whole reply, as pieces of at most about `size` characters (whole sentences). */
export function speakableChunks(markdown, size = 300) {
  const pieces = new SentenceSplitter().push(markdown, true);
  const chunks = [];
  for (const piece of pieces) {
    const last = chunks.length - 1;
    if (last >= 0 && chunks[last].length + 1 + piece.length <= size) chunks[last] += ` ${piece}`;
    else chunks.push(piece);
  }
  return chunks;
}
