"""GET /health, GET /metrics (Prometheus text) and GET /internlocal/log (the TUI's Serve screen polls it)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from internlocal.server.state import StateDep

router = APIRouter()


@router.get("/health")
async def health(state: StateDep) -> dict[str, Any]:
    return {
        "status": "ok",
        "model": state.models.name,
        "slots": state.config.slots,
        "in_flight": state.admission.in_flight,
        "queue_depth": state.models.queue_depth(),
    }


@router.get("/metrics")
async def prometheus(state: StateDep) -> PlainTextResponse:
    state.metrics.queue_depth.set(state.models.queue_depth())
    state.metrics.in_flight.set(state.admission.in_flight)
    return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/internlocal/log")
async def request_log(state: StateDep) -> dict[str, Any]:
    """Recent requests and totals, for the TUI's Serve screen."""
    return {
        "model": state.models.name,
        "loaded": [
            {"name": card.name, "kind": card.kind, "expires_at": card.expires_at} for card in state.models.loaded()
        ],
        "in_flight": state.admission.in_flight,
        "queue_depth": state.models.queue_depth(),
        "totals": state.metrics.totals,
        "recent": list(state.metrics.recent)[-50:],
    }
