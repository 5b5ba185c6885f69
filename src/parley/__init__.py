"""Parley: a self-hosted, real-time AI chat and voice assistant server."""

__version__ = "0.1.0"
