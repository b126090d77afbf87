"""GET /v1/models and /v1/models/{id}: the models this server answers with."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from internlocal.server.openai_schema import APIError
from internlocal.server.state import ServerState, StateDep

router = APIRouter()


def _entry(name: str, state: ServerState) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": state.config.created, "owned_by": "internlocal"}


@router.get("/v1/models")
async def list_models(state: StateDep) -> dict[str, Any]:
    return {"object": "list", "data": [_entry(name, state) for name in state.models.names()]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, state: StateDep) -> dict[str, Any]:
    if model_id not in state.models.names():
        raise APIError(
            404, f"The model {model_id!r} does not exist here (GET /v1/models).", code="model_not_found", param="model"
        )
    return _entry(model_id, state)
