"""OpenAI-compatible HTTP server over the engines (FastAPI + uvicorn)."""
