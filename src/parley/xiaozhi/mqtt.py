"""XiaoZhi devices over MQTT + UDP: Parley is an MQTT client of the broker, not a separate gateway.

    device --JSON--> broker <prefix>/up/<key>   --> MqttGateway --> the device's MqttChannel
    device <--JSON-- broker <prefix>/down/<key> <-- MqttChannel.send_text
    device <==encrypted Opus==> UdpEndpoint (one socket) <==> the channel's UdpSession

A device's `<key>` is the SHA-256 digest of its current device token (what the store keeps): it
is given in the OTA answer as the device's MQTT client id and topics, and it names the device to
Parley, which finds it with the store's token lookup. A plain broker does not tell Parley who
published a message, so the topic is the credential: the broker must let each device use only
the topics of its own client id (the README gives the Mosquitto ACL), and never a wildcard. The
key changes with every OTA answer, like the token.

Each `hello` opens a session (a new UDP key, nonce and ssrc); `goodbye` from the device ends it,
and Parley says `goodbye` when it ends one itself. The gateway reconnects with backoff when the
broker goes away; sessions open at that moment end (their device must say hello again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from parley.errors import ConfigError, InvalidInput, ParleyError, PayloadTooLarge
from parley.xiaozhi import protocol

if TYPE_CHECKING:  # the mqtt extra: imported where the gateway runs
    import aiomqtt

    from parley.xiaozhi.udp import UdpEndpoint, UdpSession

log = logging.getLogger("parley.xiaozhi.mqtt")

KEY_RE = re.compile(r"^[0-9a-f]{64}$")
#: frames waiting for a session's reader before more are dropped (about 30 s of audio)
QUEUE_FRAMES = 512
#: messages the MQTT client holds for the gateway before the broker's next ones are dropped
QUEUE_MESSAGES = 4096
MAX_BACKOFF_SECONDS = 5.0
INSTALL_HINT = "PARLEY_MQTT_URL needs aiomqtt and cryptography: pip install 'parley[mqtt]'"


@dataclass(slots=True, frozen=True)
class Broker:
    """Where Parley connects (PARLEY_MQTT_URL: `mqtt://user:password@host:1883`)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Broker:
        parts = urlsplit(url)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise ConfigError(
                "PARLEY_MQTT_URL must look like mqtt://host:1883 (or mqtt://user:password@host:1883)",
                field="PARLEY_MQTT_URL",
            )
        try:
            port = parts.port or 1883
        except ValueError:
            raise ConfigError("PARLEY_MQTT_URL has a bad port", field="PARLEY_MQTT_URL") from None
        return cls(
            parts.hostname,
            port,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
        )


def topics(prefix: str, key: str) -> tuple[str, str]:
    """(the device's publish topic, its subscribe topic)."""
    return f"{prefix}/up/{key}", f"{prefix}/down/{key}"


class MqttChannel:
    """A device session's channel: JSON from and to its topics, audio from and to its UdpSession."""

    transport = "udp"

    def __init__(self, gateway: MqttGateway, key: str) -> None:
        self.gateway = gateway
        self.key = key
        self.down_topic = topics(gateway.prefix, key)[1]
        self.udp: UdpSession = gateway.udp.open(self._push)
        self.session_id = ""
        self.dropped = 0
        self._frames: asyncio.Queue[str | bytes | None] = asyncio.Queue(QUEUE_FRAMES)
        self._closed = False

    def _push(self, frame: str | bytes | None) -> None:
        if self._closed and frame is not None:
            return
        try:
            self._frames.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped += 1
            if frame is None:  # the end must get through: make room for it
                self._frames.get_nowait()
                self._frames.put_nowait(None)

    def push_text(self, text: str) -> None:
        self._push(text)

    def gone(self) -> None:
        """The device said goodbye, or the broker went away."""
        self._closed = True
        self._push(None)

    async def receive(self) -> str | bytes | None:
        return await self._frames.get()

    def hello_fields(self, hello: protocol.Hello) -> dict[str, Any]:
        self.udp.frame_ms = hello.audio_params.frame_duration
        return {"udp": self.udp.hello_block()}

    async def send_text(self, text: str) -> None:
        if not self.session_id:
            with contextlib.suppress(ValueError, AttributeError):
                self.session_id = str(json.loads(text).get("session_id") or "")
        await self.gateway.publish(self.down_topic, text)

    async def send_bytes(self, data: bytes) -> None:
        self.udp.send(data)

    async def close(self, code: int, reason: str) -> None:
        """Parley ends the session: `goodbye` tells the device to close its audio channel."""
        if self._closed:
            return
        self.gone()
        with contextlib.suppress(Exception):
            await self.gateway.publish(
                self.down_topic, protocol.dumps({"type": "goodbye", "session_id": self.session_id})
            )

    def release(self) -> None:
        self._closed = True
        self.udp.close()


#: runs one device session to its end: (its key, its channel); a ParleyError refuses the device
OpenSession = Callable[[str, MqttChannel], Awaitable[None]]


class MqttGateway:
    """Owns the broker connection and the device sessions it opened: `start()`, then `aclose()`."""

    def __init__(
        self,
        broker: Broker,
        udp: UdpEndpoint,
        open_session: OpenSession,
        *,
        prefix: str = "parley",
        client_id: str | None = None,
    ) -> None:
        self.broker = broker
        self.udp = udp
        self.prefix = prefix
        self.open_session = open_session
        self.client_id = client_id
        self.channels: dict[str, MqttChannel] = {}
        #: set once the first connection has been tried (start-up waits for it)
        self.attempted = asyncio.Event()
        self.dropped = 0
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="xiaozhi-mqtt")

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, *self._sessions) if t is not None]
        for channel in list(self.channels.values()):
            await channel.close(1001, "server shutting down")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.udp.close()

    async def publish(self, topic: str, text: str) -> None:
        import aiomqtt

        client = self._client
        if client is None:
            raise ConnectionError("not connected to the MQTT broker")
        try:
            await client.publish(topic, text.encode("utf-8"))
        except aiomqtt.MqttError as exc:
            raise ConnectionError(f"the MQTT broker refused a message ({exc})") from exc

    async def _run(self) -> None:
        import aiomqtt

        failures = 0
        while True:
            try:
                async with aiomqtt.Client(
                    self.broker.host,
                    self.broker.port,
                    username=self.broker.username,
                    password=self.broker.password,
                    identifier=self.client_id,
                    max_queued_incoming_messages=QUEUE_MESSAGES,
                ) as client:
                    await client.subscribe(f"{self.prefix}/up/+")
                    self._client = client
                    self.attempted.set()
                    if failures:
                        log.warning("MQTT broker answers again after %d failed attempts", failures)
                        failures = 0
                    async for message in client.messages:
                        self._on_message(str(message.topic), message.payload)
            except (aiomqtt.MqttError, OSError) as exc:
                if failures == 0:
                    log.warning(
                        "MQTT broker %s:%d does not answer (%s); retrying",
                        self.broker.host,
                        self.broker.port,
                        exc,
                    )
            finally:
                self.attempted.set()
                self._client = None
                for channel in list(self.channels.values()):
                    channel.gone()
            failures += 1
            await asyncio.sleep(min(MAX_BACKOFF_SECONDS, 0.1 * 2**failures))

    def _on_message(self, topic: str, payload: Any) -> None:
        key = topic.rpartition("/")[2]
        if not KEY_RE.match(key):
            self.dropped += 1
            return
        raw = payload if isinstance(payload, bytes | bytearray) else str(payload or "").encode()
        text = bytes(raw).decode("utf-8", errors="replace")
        channel = self.channels.get(key)
        try:
            if len(raw) > protocol.MAX_FRAME_BYTES:
                limit = protocol.MAX_FRAME_BYTES
                raise PayloadTooLarge(f"message is larger than {limit} bytes", field="frame", limit=limit)
            kind = _kind(text)
        except InvalidInput as exc:
            if channel is not None:  # the session refuses it as any bad frame (and counts a flood)
                channel.push_text(text)
            else:
                self._alert(key, exc, None)
            return
        if kind == "hello":
            self._open(key, text)
        elif channel is None:
            if kind != "goodbye":
                self._alert(key, InvalidInput("no session: send hello first", field="type"), None)
        elif kind == "goodbye":
            del self.channels[key]  # what the device sends next is for no session
            channel.gone()
        else:
            channel.push_text(text)

    def _open(self, key: str, hello: str) -> None:
        earlier = self.channels.pop(key, None)
        if earlier is not None:  # a new hello opens a new audio channel: the old one is over
            earlier.gone()
        channel = MqttChannel(self, key)
        channel.push_text(hello)
        self.channels[key] = channel
        task = asyncio.create_task(self._session(channel), name=f"xiaozhi-mqtt-session:{key[:8]}")
        self._sessions.add(task)
        task.add_done_callback(self._sessions.discard)

    async def _session(self, channel: MqttChannel) -> None:
        refused: ParleyError | None = None
        try:
            await self.open_session(channel.key, channel)
        except ParleyError as exc:
            refused = exc
        except Exception:
            log.exception("xiaozhi mqtt session failed")
        finally:
            channel.release()
            if self.channels.get(channel.key) is channel:
                del self.channels[channel.key]
        if refused is not None:  # said once the session is gone: what the device sends next finds none
            log.info("xiaozhi mqtt device refused: %s", refused.message)
            with contextlib.suppress(Exception):
                await self.publish(channel.down_topic, protocol.alert("", refused.to_dict()))

    def _alert(self, key: str, exc: ParleyError, channel: MqttChannel | None) -> None:
        text = protocol.alert(channel.session_id if channel else "", exc.to_dict())
        task = asyncio.create_task(self._publish_quietly(topics(self.prefix, key)[1], text))
        self._sessions.add(task)
        task.add_done_callback(self._sessions.discard)

    async def _publish_quietly(self, topic: str, text: str) -> None:
        with contextlib.suppress(Exception):
            await self.publish(topic, text)


def _kind(text: str) -> str:
    """The message's `type` (the session parses the rest); InvalidInput when it is not JSON."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"message is not valid JSON ({str(exc)[:80]})", field="frame") from None
    kind = data.get("type") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else ""
