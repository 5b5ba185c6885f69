"""The long-lived parts of a running server, built once by the app's lifespan and passed down."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from parley.auth.base import Authenticator, NoAuth
from parley.bus.base import Bus
from parley.config import Settings
from parley.providers.llm import ChatProvider
from parley.providers.stt import STTProvider
from parley.providers.tts import TTSProvider
from parley.providers.warmup import WarmUp
from parley.rtc.directory import CallDirectory
from parley.rtc.registry import CallRegistry
from parley.rtc.tokens import TokenSigner
from parley.sessions.directory import SessionDirectory
from parley.sessions.registry import SessionRegistry
from parley.store.base import Store
from parley.store.users import UserStore

if TYPE_CHECKING:
    from parley.auth.rates import UserLimits
    from parley.web.limits import ClientLimits


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    bus: Bus
    chat: ChatProvider
    stt: STTProvider
    sessions: SessionRegistry
    tts: TTSProvider
    calls: CallRegistry
    #: signs the tokens that lock SFU sessions and calls to their browser
    tokens: TokenSigner
    #: where each session's turns run: here, or on the node that owns it (PARLEY_REDIS_URL)
    directory: SessionDirectory
    #: where each call lives: here, or on the node holding its media (PARLEY_REDIS_URL)
    call_directory: CallDirectory
    #: the background loading of the local models (None when PARLEY_WARM_UP is off)
    warmup: WarmUp | None = None
    #: per-client-address limits on call signalling (None: unlimited, for embedding and tests)
    limits: ClientLimits | None = None
    #: the users and their credentials (the store, seen through its users seam)
    users: UserStore | None = None
    #: who a request is from (PARLEY_AUTH)
    auth: Authenticator = field(default_factory=NoAuth)
    #: per-user rates and daily quotas (None: unlimited)
    user_limits: UserLimits | None = None
    #: open WebSockets per user id, in this process (PARLEY_MAX_SOCKETS_PER_USER)
    sockets: Counter[str] = field(default_factory=Counter)
