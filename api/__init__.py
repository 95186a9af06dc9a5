"""The HTTP edge: app factory and lifespan, auth, problem+json, REST, WebSocket, SSE."""
