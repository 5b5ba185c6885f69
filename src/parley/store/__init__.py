"""Storage of conversations behind one small interface (`Store`)."""

from parley.store.base import Message, MessageStatus, Store

__all__ = ["Message", "MessageStatus", "Store"]
