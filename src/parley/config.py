"""Settings: built once (from the environment, `.env` and a secrets directory) and passed down.

Nothing below this module and `cli.py` reads `os.environ`. Every setting is one row of
(env name, default, help), which the README's configuration table mirrors (a test checks it).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, friendly, and knowledgeable AI assistant. Provide clear, concise, and "
    "accurate responses. Be conversational and engaging."
)

LLMName = Literal["llama-cpp", "ollama", "openai", "workers-ai", "none"]
STTName = Literal["faster-whisper", "pocketsphinx", "workers-ai", "openai", "none"]
TTSName = Literal["piper", "espeak", "workers-ai", "openai", "none"]
VADName = Literal["silero", "webrtcvad"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
RTCMode = Literal["direct", "cloudflare"]
AuthMode = Literal["none", "token", "cloudflare-access", "trusted-header"]


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """Every knob of Parley. Field descriptions are the help shown by `parley config`."""

    model_config = SettingsConfigDict(
        env_prefix="PARLEY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        secrets_dir=None,
    )

    # -- server ---------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address `parley serve` listens on.")
    port: int = Field(8787, ge=0, le=65535, description="Port `parley serve` listens on.")
    data_dir: Path = Field(Path("data"), description="Where the SQLite database and models live.")
    database_url: str | None = Field(
        None,
        description="Store URL: `sqlite:///PATH` or `postgresql://USER:PASSWORD@HOST:5432/DATABASE` "
        "(needs `pip install 'parley[postgres]'`); unset means `sqlite:///<PARLEY_DATA_DIR>/parley.db`.",
    )
    node_id: str | None = Field(
        None,
        max_length=128,
        description="This process's name among several on one database (default: the host name): at "
        "start it fails only the replies it left unfinished. Give each process on one host its own.",
    )
    log_level: LogLevel = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins besides this server's own whose pages may call the API and open "
        "sockets (JSON list, or `*`); a state-changing request from any other page is refused 403.",
    )
    # NoDecode: the list is written comma-separated, as hosts are, not as JSON
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1"],
        description="Host names requests may address (comma-separated, or `*`), plus PARLEY_HOST "
        "when it is not a wildcard; another Host header is refused 400 (DNS rebinding).",
    )
    public_url: str | None = Field(
        None,
        description="The URL devices and other machines reach this server at (e.g. "
        "`https://parley.example.com`), given to XiaoZhi devices in the OTA answer; unset uses the "
        "scheme and Host of the device's own request.",
    )
    mqtt_url: str | None = Field(
        None,
        description="MQTT broker Parley connects to for XiaoZhi devices' MQTT + UDP transport "
        "(`mqtt://user:password@127.0.0.1:1883`); the OTA answer then gives devices an `mqtt` block. "
        "Unset: devices use the WebSocket only.",
    )
    mqtt_endpoint: str | None = Field(
        None,
        description="The broker address (`host:port`) XiaoZhi devices are told to connect to; unset "
        "uses the host of PARLEY_PUBLIC_URL (else of the device's OTA request) and the port of PARLEY_MQTT_URL.",
    )
    mqtt_topic_prefix: str = Field(
        "parley",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="First level of the devices' MQTT topics: `<prefix>/up/<key>` (device to Parley) and "
        "`<prefix>/down/<key>`.",
    )
    mqtt_device_username: str | None = Field(
        None, description="MQTT username the OTA answer gives XiaoZhi devices (the broker's device account)."
    )
    mqtt_device_password: SecretStr | None = Field(
        None, description="MQTT password the OTA answer gives XiaoZhi devices."
    )
    udp_bind: str = Field("0.0.0.0", description="Address the UDP socket of XiaoZhi devices' audio binds.")
    udp_port: int = Field(
        8788, ge=0, le=65535, description="UDP port of XiaoZhi devices' audio (0: any free port)."
    )
    udp_host: str | None = Field(
        None,
        description="The address devices send their UDP audio to, given in the server hello; unset uses "
        "the host of PARLEY_MQTT_ENDPOINT, else of PARLEY_PUBLIC_URL.",
    )
    max_header_bytes: int = Field(
        65536,
        ge=1024,
        description="Largest request head (request line and headers) `parley serve` reads, in bytes; "
        "a larger one is answered 431 and its connection closed.",
    )
    max_headers: int = Field(
        100,
        ge=8,
        description="Most headers a request may have; more are answered 431 and the connection closed.",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a request's headers; a slower one is answered 408 and "
        "its connection closed.",
    )

    # -- conversation ---------------------------------------------------------------------------
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="System prompt of every turn.")
    history_limit: int = Field(
        20,
        ge=0,
        le=1000,
        description="At most how many earlier messages the model sees (storage keeps all). The window "
        "advances in blocks: past the limit the oldest are dropped down to the newest half at once, so for "
        "several turns each prompt only adds to the previous one and llama.cpp reuses its cache of it.",
    )
    max_tokens: int = Field(512, ge=1, le=32768, description="Reply length limit passed to the model.")
    titles: Literal["auto", "model", "words"] = Field(
        "auto",
        description="How a conversation is titled after its first turn: `model` asks the chat model for "
        "a short title in the background, after the reply (the first words stand until it answers, "
        "and if it cannot), `words` takes the first words of the first message, `auto` is `model` "
        "except for a model in this process (llama.cpp), whose title would delay the next reply.",
    )
    max_message_chars: int = Field(8000, ge=1, description="Longest user message accepted, in characters.")
    max_audio_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, description="Largest audio upload accepted, in bytes."
    )
    max_audio_seconds: float = Field(
        300.0, gt=0, description="Longest recording accepted for transcription, in seconds."
    )
    max_ws_frame_bytes: int | None = Field(
        None,
        ge=256,
        description="Largest WebSocket frame accepted from a client, in bytes; unset allows 12 bytes per "
        "character of PARLEY_MAX_MESSAGE_CHARS plus 4096 (a message in any JSON spelling).",
    )
    max_queued_turns: int = Field(
        32, ge=1, description="Turns that may wait behind the running one in a session."
    )
    session_idle_seconds: float = Field(
        300.0, gt=0, description="A live session with no sockets and no turns is released after this."
    )

    # -- models ---------------------------------------------------------------------------------
    llm: LLMName | None = Field(
        None,
        description="Chat provider: llama-cpp, ollama, openai, workers-ai or none; unset picks the first usable.",
    )
    llm_model: str | None = Field(None, description="Chat model; unset uses the provider's default.")
    llm_base_url: str | None = Field(
        None, description="Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1."
    )
    llm_api_key: SecretStr | None = Field(None, description="API key for the OpenAI-compatible server.")
    stt: STTName | None = Field(
        None,
        description="Speech-to-text provider: faster-whisper, pocketsphinx, workers-ai, openai or none; "
        "unset picks the first usable.",
    )
    stt_model: str | None = Field(None, description="Speech-to-text model; unset uses the provider default.")
    stt_base_url: str | None = Field(
        None, description="OpenAI-compatible base URL for speech-to-text; unset uses PARLEY_LLM_BASE_URL."
    )
    stt_api_key: SecretStr | None = Field(
        None, description="API key for speech-to-text; unset uses PARLEY_LLM_API_KEY."
    )
    stt_language: str | None = Field(
        None, description="Fixed speech language (e.g. `en`); unset detects it where the model can."
    )
    tts: TTSName | None = Field(
        None, description="Text-to-speech provider: piper, espeak, workers-ai, openai or none; unset picks."
    )
    tts_model: str | None = Field(None, description="Text-to-speech model; unset uses the provider default.")
    tts_voice: str | None = Field(None, description="Voice name; unset uses the provider's default.")
    max_speak_chars: int = Field(4000, ge=1, description="Longest text /api/speak accepts, in characters.")
    vad: VADName | None = Field(
        None, description="Voice activity detector: silero or webrtcvad; unset picks."
    )
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="Speech probability that counts as speech.")
    vad_start_secs: float = Field(0.2, ge=0, description="Speech needed before a speech-start event.")
    vad_stop_secs: float = Field(
        0.2, ge=0, description="Silence needed before a speech-end event (hangover)."
    )
    voice_backend: Literal["local", "xiaozhi"] = Field(
        "local",
        description="Who answers voice calls: `local` (Parley's own VAD, STT, model and TTS) or `xiaozhi` "
        "(a remote XiaoZhi server at PARLEY_XIAOZHI_OTA_URL; Parley bridges each call to it as a device).",
    )
    xiaozhi_ota_url: str | None = Field(
        None,
        validate_default=True,
        description="OTA URL of the XiaoZhi server voice calls go to with PARLEY_VOICE_BACKEND=xiaozhi "
        "(like `http://xiaozhi.lan:8003/xiaozhi/ota/`).",
    )
    ice_servers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="ICE servers for voice calls: JSON list of {urls, username?, credential?}; aiortc "
        "uses only the first STUN and the first TURN URL, so order matters.",
    )
    call_idle_seconds: float = Field(
        20.0, gt=0, description="A voice call with no audio or data-channel message for this long is closed."
    )
    max_calls: int = Field(50, ge=1, description="Voice calls open at once.")
    max_calls_per_client: int = Field(
        3, ge=1, description="Voice calls one client address may hold open at once."
    )
    new_sessions_rate_limit: str = Field(
        "120/minute",
        description="How often one client address may open a socket on a session that is not live "
        "(each makes a live session that stays until it idles out; a rate such as `120/minute`).",
    )
    signalling_rate_limit: str = Field(
        "30/minute",
        description="How often one client address may ask for ICE servers (TURN credentials) and send "
        "call offers, each (a rate such as `30/minute`, over a moving window).",
    )
    ollama_url: str = Field("http://127.0.0.1:11434", description="Where `parley serve` looks for Ollama.")
    model_base_url: str = Field(
        "https://huggingface.co",
        description="Where model files are downloaded from (a mirror of the Hugging Face hub works too).",
    )
    bundled_models: bool = Field(
        True,
        description="Use the models installed with Parley (SmolLM2 chat, Whisper base, Piper joe) when no "
        "better pulled model is here; false makes the local engines use only pulled or downloaded models.",
    )
    warm_up: bool = Field(
        True,
        description="Load the local models in the background when `parley serve` starts, so the first "
        "reply does not wait for a model to load.",
    )
    provider_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a model call may wait to connect or for its next bytes before it fails with 504.",
    )
    cloudflare_account_id: str | None = Field(
        None,
        validation_alias=_env("CLOUDFLARE_ACCOUNT_ID"),
        description="Cloudflare account id for Workers AI.",
    )
    cloudflare_api_token: SecretStr | None = Field(
        None,
        validation_alias=_env("CLOUDFLARE_API_TOKEN"),
        description="Cloudflare API token with Workers AI Read + Edit.",
    )
    workers_ai_base_url: str = Field(
        "https://api.cloudflare.com/client/v4", description="Cloudflare API base URL."
    )
    cloudflare_turn_key_id: str | None = Field(
        None,
        validation_alias=_env("CLOUDFLARE_TURN_KEY_ID"),
        description="Cloudflare TURN key id; with its API token, /api/ice serves short-lived TURN "
        "credentials generated per call.",
    )
    cloudflare_turn_key_api_token: SecretStr | None = Field(
        None,
        validation_alias=_env("CLOUDFLARE_TURN_KEY_API_TOKEN"),
        description="API token of the Cloudflare TURN key; stays on the server.",
    )
    turn_ttl_seconds: int = Field(
        600,
        ge=60,
        le=48 * 3600,
        description="Lifetime of generated TURN credentials, in seconds (at most 48 h).",
    )
    realtime_base_url: str = Field(
        "https://rtc.live.cloudflare.com/v1", description="Cloudflare Realtime (SFU and TURN) API base URL."
    )
    rtc: RTCMode = Field(
        "direct",
        description="How voice calls carry media: `direct` (browser <-> this server) or `cloudflare` "
        "(both meet in the Cloudflare Realtime SFU; needs the app id and secret).",
    )
    cloudflare_realtime_app_id: str | None = Field(
        None,
        validation_alias=_env("CLOUDFLARE_REALTIME_APP_ID"),
        description="Cloudflare Realtime (SFU) app id, for PARLEY_RTC=cloudflare.",
    )
    cloudflare_realtime_app_secret: SecretStr | None = Field(
        None,
        validation_alias=_env("CLOUDFLARE_REALTIME_APP_SECRET"),
        description="Cloudflare Realtime app secret; stays on the server (browsers reach the SFU "
        "through Parley).",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Key that signs the SFU session tokens given to browsers; unset makes a random "
        "one at start (tokens then end with a restart, and instances behind one balancer need the same key).",
    )

    # -- users ----------------------------------------------------------------------------------
    auth: AuthMode = Field(
        "none",
        description="Who may use the server: `none` (one local user; only on loopback addresses), `token` "
        "(users and API tokens kept by Parley: `parley users add`), `cloudflare-access` (the "
        "Cf-Access-Jwt-Assertion of Cloudflare Access) or `trusted-header` (a reverse proxy's user header).",
    )
    allow_open: bool = Field(
        False,
        description="With PARLEY_AUTH=none, allow listening on a non-loopback address anyway (anyone who "
        "reaches the port can do everything; warned about at every start).",
    )
    access_team_domain: str | None = Field(
        None,
        description="Cloudflare Access team domain URL (`https://<team>.cloudflareaccess.com`): the JWTs' "
        "issuer; keys come from its /cdn-cgi/access/certs.",
    )
    access_aud: str | None = Field(
        None, description="The Access application's AUD tag; a JWT's `aud` must contain it."
    )
    trusted_header: str | None = Field(
        None, description="With PARLEY_AUTH=trusted-header: the header carrying the user's email."
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="With PARLEY_AUTH=trusted-header: the proxies' addresses (comma-separated CIDRs); "
        "the header from any other peer is refused.",
    )
    signin_days: float = Field(
        30.0, gt=0, description="How long a web sign-in (the session cookie a token is exchanged for) lasts."
    )
    auth_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="How long a process remembers whom a credential belongs to (0: look up every "
        "request); a token revoked or a user disabled elsewhere stops working within this time.",
    )
    metrics_token: SecretStr | None = Field(
        None, description="Bearer token that may read /metrics (besides admins), for a Prometheus scraper."
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL (`redis://host:6379/0`): set it to run several Parley processes on one "
        "PostgreSQL database. Session events, session ownership and rate-limit counters live there.",
    )
    session_lease_seconds: float = Field(
        3.0,
        ge=0.5,
        le=60,
        description="With PARLEY_REDIS_URL: how long a node's claim on a session lasts unless renewed; "
        "a dead node's sessions are taken over within about this time plus a third of it.",
    )
    rate_chat: str = Field("30/minute", description="Turns one user may start (text and voice), as a rate.")
    rate_transcribe: str = Field("30/minute", description="Transcriptions one user may ask for, as a rate.")
    rate_speak: str = Field("60/minute", description="Speech syntheses (/api/speak) one user may ask for.")
    rate_calls: str = Field("10/minute", description="Voice calls one user may start, as a rate.")
    rate_ice: str = Field("30/minute", description="ICE server (TURN credential) requests per user.")
    quota_tokens_per_day: int | None = Field(
        None,
        ge=1,
        description="Model tokens (prompt + reply) one user may use per day (UTC); unset: no quota.",
    )
    quota_call_minutes_per_day: float | None = Field(
        None, gt=0, description="Minutes of voice calls one user may hold per day (UTC); unset: no quota."
    )
    max_sessions_per_user: int = Field(
        1000, ge=1, description="Conversations (session ids with stored messages) one user may have."
    )
    max_live_sessions: int = Field(
        2000, ge=1, description="Live sessions this process holds at once (idle ones are released first)."
    )
    max_sockets_per_user: int = Field(32, ge=1, description="WebSockets one user may hold open at once.")

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        for host in value if isinstance(value, list) else ():
            # "http://x" or "x:8787" would never equal a Host header's name, so it would
            # silently refuse everything: say so at start-up instead.
            if not isinstance(host, str) or any(c in host for c in "/ @") or host.count(":") == 1:
                raise ValueError(
                    f"{host!r} is not a host name (like localhost or 192.168.1.5, no scheme or port)"
                )
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        for cidr in value if isinstance(value, list) else ():
            try:
                ipaddress.ip_network(str(cidr), strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an address or CIDR (like 10.0.0.0/8 or ::1)") from None
        return value

    @field_validator("xiaozhi_ota_url")
    @classmethod
    def _bridge_needs_url(cls, value: str | None, info: Any) -> str | None:
        if info.data.get("voice_backend") == "xiaozhi" and not value:
            raise ValueError(
                "PARLEY_VOICE_BACKEND=xiaozhi needs PARLEY_XIAOZHI_OTA_URL, the remote server's OTA URL"
            )
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(
                "PARLEY_XIAOZHI_OTA_URL must be an http(s) URL like http://xiaozhi.lan:8003/xiaozhi/ota/"
            )
        return value

    @property
    def resolved_node_id(self) -> str:
        """PARLEY_NODE_ID, else this machine's host name."""
        return self.node_id or socket.gethostname() or "local"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'parley.db'}"


def load_settings(**overrides: Any) -> Settings:
    """Settings for a command: environment, `.env`, then files in PARLEY_SECRETS_DIR.

    A secrets directory holds one file per secret, named like its variable
    (`CLOUDFLARE_API_TOKEN`, `PARLEY_LLM_API_KEY`, ...), as Docker and systemd credentials provide.
    """
    secrets_dir = os.environ.get("PARLEY_SECRETS_DIR") or None
    return Settings(_secrets_dir=secrets_dir, **overrides)


def settings_table() -> list[tuple[str, str, str]]:
    """(env name, default, help) for every setting, for the CLI and the README check."""
    rows = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        env = str(alias.choices[0]) if isinstance(alias, AliasChoices) else "PARLEY_" + name.upper()
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        shown = "" if default is None else str(default)
        rows.append((env, shown, field.description or ""))
    return rows
