"""The device identities Parley shows a remote XiaoZhi server when it bridges calls to it.

A XiaoZhi server knows a device by its `Device-Id` (a MAC) and `Client-Id` (a UUID), binds each
one to an account once (the activation code), and keeps one socket per device: a second socket
of the same device replaces the first. So each call that is open at the same time needs an
identity of its own, and the same identities must come back after a restart, or the server would
ask for a new code every time. They are kept in `<PARLEY_DATA_DIR>/xiaozhi-bridge.json`; a call
takes the lowest free one (a single call at a time always uses the first) and gives it back when
it ends. The MACs are random locally administered addresses (`02:...`): they name no hardware.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from parley.errors import ConfigError

log = logging.getLogger("parley.xiaozhi")


@dataclass(slots=True, frozen=True)
class Identity:
    device_id: str
    client_id: str
    #: the key of the activation HMAC over the server's challenge (the firmware's is burnt in)
    secret: str

    @classmethod
    def new(cls) -> Identity:
        mac = "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))
        return cls(mac, str(uuid.uuid4()), secrets.token_hex(32))


class Identities:
    """The pool of identities in one file; `take()` and `give_back()` from the event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._known: list[Identity] | None = None
        self._taken: set[str] = set()

    def take(self) -> Identity:
        known = self._load()
        for identity in known:
            if identity.device_id not in self._taken:
                break
        else:
            identity = Identity.new()
            known.append(identity)
            self._save(known)
            log.info(
                "xiaozhi bridge: new device identity %s (%d in %s)", identity.device_id, len(known), self.path
            )
        self._taken.add(identity.device_id)
        return identity

    def give_back(self, identity: Identity) -> None:
        self._taken.discard(identity.device_id)

    def _load(self) -> list[Identity]:
        if self._known is None:
            try:
                raw = json.loads(self.path.read_text())
                self._known = [Identity(**item) for item in raw["identities"]]
            except FileNotFoundError:
                self._known = []
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(
                    f"{self.path} is not a XiaoZhi bridge identity file ({exc}); move it away to start afresh",
                    field="PARLEY_DATA_DIR",
                ) from exc
        return self._known

    def _save(self, known: list[Identity]) -> None:
        # a few hundred bytes, written once per new identity: written in place on the loop
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"identities": [asdict(i) for i in known]}, indent=1))
        os.chmod(tmp, 0o600)  # the activation secrets
        os.replace(tmp, self.path)
