"""An emotion for the device's face, chosen from the reply's text (the `llm` message).

XiaoZhi firmware draws a face per emotion name (neutral, happy, laughing, sad, surprised,
thinking, ...). A reply's own emoji wins; otherwise a few cue words pick one, and a plain reply
is `neutral`. Cheap on purpose: it runs once per reply, before the first audio.
"""

from __future__ import annotations

import re

EMOJI = {
    "😊": "happy",
    "🙂": "happy",
    "😀": "happy",
    "😄": "laughing",
    "😂": "laughing",
    "😢": "sad",
    "😔": "sad",
    "😮": "surprised",
    "😲": "surprised",
    "🤔": "thinking",
    "😉": "winking",
    "😍": "loving",
    "😠": "angry",
    "😎": "cool",
    "😴": "sleepy",
}
EMOJI_OF = {name: emoji for emoji, name in reversed(list(EMOJI.items()))} | {"neutral": "😶"}
CUES = (
    ("sad", re.compile(r"\b(sorry|unfortunately|sad|apolog\w*)\b", re.I)),
    ("laughing", re.compile(r"\b(haha|hilarious|lol|funny)\b", re.I)),
    ("surprised", re.compile(r"\b(wow|whoa|amazing|incredible)\b", re.I)),
    ("thinking", re.compile(r"\b(hmm|let me think|i think|perhaps|maybe)\b", re.I)),
    ("happy", re.compile(r"(!|\b(great|glad|happy|sure|hello|hi|welcome|congratulations)\b)", re.I)),
)


def emotion_of(text: str) -> str:
    for ch in text:
        if ch in EMOJI:
            return EMOJI[ch]
    for name, cue in CUES:
        if cue.search(text):
            return name
    return "neutral"
