"""Authenticator: a request's connection -> the user it is, or Unauthenticated."""

from __future__ import annotations

from abc import ABC, abstractmethod

from starlette.requests import HTTPConnection

from parley.store.users import LOCAL_USER, User


class Authenticator(ABC):
    #: the PARLEY_AUTH value that selects it
    mode: str

    @abstractmethod
    async def authenticate(self, connection: HTTPConnection) -> User:
        """The user this HTTP request or WebSocket handshake is from.

        Raises `Unauthenticated` (401) without credentials or with ones that do not hold; the
        message says what was wrong without echoing what was sent.
        """

    async def aclose(self) -> None:
        """Release what it holds (an HTTP client for a key set)."""


class NoAuth(Authenticator):
    """PARLEY_AUTH=none: every request is the one local user (loopback only; see `auth/exposure.py`)."""

    mode = "none"

    async def authenticate(self, connection: HTTPConnection) -> User:
        return LOCAL_USER
