"""GET /v1/models: the models this server answers with."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from internlocal.server.state import StateDep

router = APIRouter()


@router.get("/v1/models")
async def list_models(state: StateDep) -> dict[str, Any]:
    created = state.config.created
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "internlocal"} for name in state.models.names()
    ]
    return {"object": "list", "data": data}
