"""create_app(settings): the ASGI application. Its lifespan owns every long-lived resource."""

from __future__ import annotations

import gc
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.cors import CORSMiddleware

from parley import __version__
from parley.auth.base import NoAuth
from parley.auth.factory import build_authenticator, check_auth_settings
from parley.auth.rates import UserLimits
from parley.bus.base import Bus
from parley.bus.factory import build_bus
from parley.config import Settings
from parley.errors import ConfigError
from parley.logs import AccessLog
from parley.providers.llm import ChatProvider, Usage
from parley.providers.stt import STTProvider
from parley.providers.tts import TTSProvider
from parley.providers.unconfigured import UnconfiguredChat
from parley.providers.vad import SpeechModel
from parley.providers.warmup import WarmUp
from parley.rtc.cloudflare import CloudflareRealtimeClient
from parley.rtc.directory import CallDirectory
from parley.rtc.ice import parse_ice_servers
from parley.rtc.registry import CallConfig, CallRegistry
from parley.rtc.tokens import TokenSigner
from parley.rtc.turn import CloudflareTURN
from parley.services import Services
from parley.sessions.directory import LocalDirectory, SessionDirectory
from parley.sessions.keys import owner_of
from parley.sessions.registry import SessionRegistry
from parley.sessions.session import SessionConfig
from parley.sessions.titles import Titler
from parley.store.base import Store
from parley.store.conversations import ConversationStore
from parley.store.factory import build_store
from parley.store.users import UserStore
from parley.voice.pipeline import VoiceConfig
from parley.web import api, devices, errors, rtc, sfu, signin, speak, static, ws, xiaozhi
from parley.web.auth import Authenticate
from parley.web.conversations import router as conversations_router
from parley.web.headers import SecurityHeaders
from parley.web.limits import ClientLimits
from parley.web.origins import BrowserGuard
from parley.xiaozhi.upstream import UpstreamConfig

log = logging.getLogger("parley")


def title_writer(settings: Settings, chat: ChatProvider) -> ChatProvider | None:
    """The model that writes conversations' titles (PARLEY_TITLES), or None: their first words."""
    if isinstance(chat, UnconfiguredChat) or settings.titles == "words":
        return None
    if settings.titles == "auto" and chat.in_process:
        return None  # one request at a time: a title would hold up the next reply's first token
    return chat


def _realtime_credentials(settings: Settings) -> tuple[str, str] | None:
    """(app id, secret) in Cloudflare mode, checked before anything opens; None in direct mode."""
    if settings.rtc != "cloudflare":
        return None
    secret = settings.cloudflare_realtime_app_secret
    for name, value in (
        ("CLOUDFLARE_REALTIME_APP_ID", settings.cloudflare_realtime_app_id),
        ("CLOUDFLARE_REALTIME_APP_SECRET", secret),
    ):
        if not value:
            raise ConfigError(f"PARLEY_RTC=cloudflare needs {name} (environment or secrets file)", field=name)
    assert settings.cloudflare_realtime_app_id is not None and secret is not None
    return settings.cloudflare_realtime_app_id, secret.get_secret_value()


def create_app(
    settings: Settings,
    *,
    chat: ChatProvider | None = None,
    stt: STTProvider | None = None,
    tts: TTSProvider | None = None,
    vad: SpeechModel | None = None,
    store: Store | None = None,
    bus: Bus | None = None,
    freeze_gc: bool = False,
) -> FastAPI:
    """Build the app. Parts passed in are used instead of the configured ones (tests, embedding).

    `freeze_gc` (what `parley serve` does) moves everything start-up built out of the cyclic
    garbage collector's reach: a process-wide setting, so an embedding host decides for itself.
    Settings that cannot work raise ConfigError here, before anything is opened.
    """
    ice_servers = parse_ice_servers(settings.ice_servers)
    limits = ClientLimits.from_settings(settings)
    realtime = _realtime_credentials(settings)
    bridge = UpstreamConfig.from_settings(settings)  # PARLEY_VOICE_BACKEND=xiaozhi
    check_auth_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Everything opened here is closed in reverse order, each close running even when an
        # earlier one failed.
        async with AsyncExitStack() as stack:
            the_store = store or build_store(settings)
            await the_store.open()
            stack.push_async_callback(the_store.aclose)
            stack.push_async_callback(limits.aclose)
            recovered = await the_store.fail_pending("the server stopped while this reply was written")
            if recovered:
                log.warning("marked %d interrupted replies as failed", recovered)
            users = the_store if isinstance(the_store, UserStore) else None
            if users is None and settings.auth != "none":
                raise ConfigError(
                    f"PARLEY_AUTH={settings.auth} needs a store that keeps users", field="PARLEY_DATABASE_URL"
                )
            authenticator = build_authenticator(settings, users) if users is not None else NoAuth()
            stack.push_async_callback(authenticator.aclose)
            user_limits = None
            if users is not None:
                user_limits = UserLimits.from_settings(settings, users)
                stack.push_async_callback(user_limits.aclose)
            the_bus = bus or await build_bus(settings)
            stack.push_async_callback(the_bus.aclose)
            the_chat, the_stt, the_tts = chat, stt, tts
            if the_chat is None or the_stt is None or the_tts is None:
                from parley.providers.factory import build_chat, build_stt, build_tts

                the_chat = the_chat or build_chat(settings)
                the_stt = the_stt or build_stt(settings)
                the_tts = the_tts or build_tts(settings)
            stack.push_async_callback(the_tts.aclose)
            stack.push_async_callback(the_stt.aclose)
            stack.push_async_callback(the_chat.aclose)

            async def count_usage(key: str, usage: Usage) -> None:
                if user_limits is not None:
                    await user_limits.record_tokens(owner_of(key), usage.total_tokens)

            titler = None
            if isinstance(the_store, ConversationStore):
                writer = title_writer(settings, the_chat)
                titler = Titler(the_store, the_bus, writer)
                stack.push_async_callback(titler.aclose)
            app.state.titler = titler
            registry = SessionRegistry(
                store=the_store,
                chat=the_chat,
                bus=the_bus,
                config=SessionConfig(
                    system_prompt=settings.system_prompt,
                    history_limit=settings.history_limit,
                    max_tokens=settings.max_tokens,
                    max_queued_turns=settings.max_queued_turns,
                ),
                idle_seconds=settings.session_idle_seconds,
                on_usage=count_usage,
                on_turn=titler.on_turn if titler is not None else None,
            )
            directory: SessionDirectory
            if settings.redis_url:
                from parley.sessions.cluster import ClusterDirectory  # the redis extra

                directory = ClusterDirectory.from_url(
                    registry,
                    settings.redis_url,
                    bus=the_bus,
                    store=the_store,
                    instance=f"{settings.resolved_node_id}-{secrets.token_hex(4)}",
                    lease_seconds=settings.session_lease_seconds,
                )
            else:
                directory = LocalDirectory(registry)
            # closed after the registry: the sessions' last writes still hold their fence
            stack.push_async_callback(directory.aclose)
            directory.start()
            registry.start()
            stack.push_async_callback(registry.aclose)
            if vad is None:
                from parley.providers.factory import build_vad

                the_vad = build_vad(settings)
            else:
                the_vad = vad
            calls = CallRegistry(
                sessions=registry,
                vad=the_vad,
                stt=the_stt,
                tts=the_tts,
                config=CallConfig(
                    ice_servers=ice_servers,
                    idle_seconds=settings.call_idle_seconds,
                    max_calls=settings.max_calls,
                    max_calls_per_client=settings.max_calls_per_client,
                    voice=VoiceConfig.from_settings(settings),
                    bridge=bridge,
                ),
                turn=CloudflareTURN.from_settings(settings),
                realtime=(
                    CloudflareRealtimeClient(*realtime, base_url=settings.realtime_base_url)
                    if realtime
                    else None
                ),
                on_call_end=user_limits.record_call_seconds if user_limits is not None else None,
                directory=directory,
            )
            stack.push_async_callback(calls.aclose)
            call_directory = CallDirectory(calls)
            if settings.redis_url:
                from parley.rtc.cluster import ClusterCalls
                from parley.sessions.cluster import ClusterDirectory

                assert isinstance(directory, ClusterDirectory)
                call_directory = ClusterCalls(calls, directory)
            stack.push_async_callback(call_directory.aclose)
            key = settings.secret_key
            tokens = TokenSigner(key.get_secret_value().encode() if key is not None else None)
            warmup = None
            if settings.warm_up:
                warmup = WarmUp({"chat": the_chat, "text-to-speech": the_tts, "speech-to-text": the_stt})
                warmup.start()
                stack.push_async_callback(warmup.aclose)
            app.state.services = Services(
                settings,
                the_store,
                the_bus,
                the_chat,
                the_stt,
                registry,
                the_tts,
                calls,
                tokens,
                directory,
                call_directory,
                warmup,
                limits,
                users,
                authenticator,
                user_limits,
            )
            if settings.mqtt_url:  # XiaoZhi devices over MQTT + UDP; closed first, before their calls
                gateway = await xiaozhi.start_mqtt(app, settings)
                stack.push_async_callback(gateway.aclose)
            log.info(
                "ready node=%s auth=%s chat=%s model=%s stt=%s tts=%s vad=%s store=%s",
                settings.resolved_node_id,
                settings.auth,
                the_chat.name,
                the_chat.model or "-",
                the_stt.name,
                the_tts.name,
                the_vad.name if the_vad else "none",
                type(the_store).__name__,
            )
            if freeze_gc:
                # What start-up built (modules, models, providers) lives as long as the server: keep
                # it out of the cyclic GC's full collections, which otherwise walk all of it again in
                # the middle of a burst of turns (bench/: TTFT p95 at 100 streams 2.6-110 -> 4-7 ms).
                gc.freeze()
            yield

    app = FastAPI(
        title="Parley",
        version=__version__,
        description="A self-hosted, real-time AI chat and voice assistant server.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(api.router)
    app.include_router(speak.router)
    app.include_router(rtc.router)
    app.include_router(sfu.router)
    app.include_router(ws.router)
    app.include_router(signin.router)
    app.include_router(conversations_router)
    app.include_router(xiaozhi.router)
    app.include_router(devices.router)
    app.include_router(static.router)
    app.mount("/static", StaticFiles(directory=static.STATIC_DIR), name="static")
    # Outside every route (a request without a user never reaches one), inside CORS (preflights carry
    # no credentials, and a 401 still gets its CORS headers) and BrowserGuard (a foreign page is
    # refused before its credentials are looked at).
    app.add_middleware(Authenticate)
    origins = [o for o in settings.cors_origins if o != "*"]
    # Only configured origins: same-origin pages need no CORS, and "any localhost port" trusted
    # every other local web app (a dev server, a notebook) with the user's conversations.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"] if "*" in settings.cors_origins else origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Content-Type", "Accept", "Authorization", sfu.TOKEN_HEADER, sfu.CALL_TOKEN_HEADER],
        max_age=600,
    )
    # Outside CORS, so a refused request never reaches a route; inside the headers and the log.
    app.add_middleware(BrowserGuard, settings=settings)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(AccessLog)
    return app
