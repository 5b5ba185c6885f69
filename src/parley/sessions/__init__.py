"""Live sessions: one actor per conversation, what the seed's Durable Object was meant to be."""

from parley.sessions.registry import SessionRegistry
from parley.sessions.session import ChatSession
from parley.sessions.turn import Turn, TurnState

__all__ = ["ChatSession", "SessionRegistry", "Turn", "TurnState"]
