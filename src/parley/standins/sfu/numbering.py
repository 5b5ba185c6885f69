"""Keep the client's numbering (payload types, header extension ids) in the stand-in's own offers.

aiortc's createOffer numbers everything its own way every time (Opus 96, `sdes:mid` 1, ...),
even for media sections that are already negotiated. Between two aiortc peers that happens to
match; a browser numbers differently (Opus 111, audio level 1, mid 4, ...). A browser refuses a
renegotiation that moves an extension id ("RTP extension ID reassignment not supported"), and
accepts new payload types while still sending the old ones, which aiortc's receiver then drops
as unknown. Cloudflare's SFU keeps what was negotiated; so does this, by rewriting the numbers in
the offer's text and in aiortc's transceivers (what their senders and receivers use).
"""

from __future__ import annotations

import dataclasses
import re

from aiortc import RTCRtpHeaderExtensionParameters, RTCRtpTransceiver, sdp

_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([^/\s]+)/(\d+)(?:/(\d+))?")
_PT_LINE = re.compile(r"^a=(rtpmap|fmtp|rtcp-fb):(\d+)(.*)$")

CodecKey = tuple[str, int, int]


def _key(name: str, rate: int | str, channels: int | str | None) -> CodecKey:
    return name.lower(), int(rate), int(channels or 1)


class ClientNumbering:
    def __init__(self) -> None:
        self.extensions: dict[str, int] = {}
        self.payload_types: dict[CodecKey, int] = {}

    def learn(self, offer: sdp.SessionDescription) -> None:
        """Remember the numbers of the client's offer (the first one wins)."""
        for media in offer.media:
            for extension in media.rtp.headerExtensions:
                self.extensions.setdefault(extension.uri, extension.id)
            for codec in media.rtp.codecs:
                if codec.payloadType is not None:
                    key = _key(codec.mimeType.split("/")[-1], codec.clockRate, codec.channels)
                    self.payload_types.setdefault(key, codec.payloadType)

    def apply(self, offer_sdp: str, transceivers: list[RTCRtpTransceiver]) -> str:
        """`offer_sdp` renumbered; codecs and extensions the client never offered are left out."""
        if not self.extensions and not self.payload_types:
            return offer_sdp
        ours: dict[int, int] = {}
        for line in offer_sdp.splitlines():
            found = _RTPMAP.match(line)
            if found:
                theirs = self.payload_types.get(_key(found[2], found[3], found[4]))
                if theirs is not None:
                    ours[int(found[1])] = theirs
        lines = [self._line(line, ours) for line in offer_sdp.splitlines()]
        for transceiver in transceivers:
            transceiver._codecs = [
                dataclasses.replace(c, payloadType=ours[c.payloadType])
                for c in transceiver._codecs
                if c.payloadType in ours
            ]
            transceiver._headerExtensions = [
                RTCRtpHeaderExtensionParameters(id=self.extensions[e.uri], uri=e.uri)
                for e in transceiver._headerExtensions
                if e.uri in self.extensions
            ]
        return "\r\n".join(line for line in lines if line is not None) + "\r\n"

    def _line(self, line: str, ours: dict[int, int]) -> str | None:
        if line.startswith("a=extmap:"):
            uri = line.split(" ", 1)[1].strip() if " " in line else ""
            return f"a=extmap:{self.extensions[uri]} {uri}" if uri in self.extensions else None
        if line.startswith("m=") and self.payload_types:
            head = line.split(" ")[:3]
            kept = [str(ours[int(pt)]) for pt in line.split(" ")[3:] if pt.isdigit() and int(pt) in ours]
            return " ".join(head + kept)
        found = _PT_LINE.match(line)
        if found and self.payload_types:
            pt = int(found[2])
            return f"a={found[1]}:{ours[pt]}{found[3]}" if pt in ours else None
        return line
