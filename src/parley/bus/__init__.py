"""Event fan-out: a session publishes, every connection of that session receives."""

from parley.bus.base import Bus, Subscription
from parley.bus.memory import LocalBus

__all__ = ["Bus", "LocalBus", "Subscription"]
