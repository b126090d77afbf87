"""One module per resource of the HTTP API; ``server/app.py`` holds the route table that mounts them.

``chat.py`` POST /v1/chat/completions · ``completions.py`` POST /v1/completions · ``embeddings.py``
POST /v1/embeddings · ``models.py`` GET /v1/models · ``health.py`` GET /health, /metrics and
/internlocal/log (the TUI's Serve screen).
"""
