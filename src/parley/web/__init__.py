"""The web edge: REST, SSE, WebSocket and the static app. Nothing here holds conversation state."""
