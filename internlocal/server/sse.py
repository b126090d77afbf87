"""The one server-sent-events response every streaming endpoint returns, framed as OpenAI streams are."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi.responses import StreamingResponse

from internlocal.engines.base import Generation


def sse_response(
    events: AsyncIterator[dict[str, Any]],
    generations: Generation | Sequence[Generation],
    *,
    on_close: Callable[[], None],
) -> StreamingResponse:
    """``data: <json>`` per event, then ``data: [DONE]`` once the generations (a request's choices) have ended.

    A stream whose client went away (a generation has no result) stops without ``[DONE]``.
    ``on_close`` runs however the stream ends (it releases the request's admission).
    """
    every = [generations] if isinstance(generations, Generation) else list(generations)

    async def body() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
            if all(g.result is not None for g in every):
                yield "data: [DONE]\n\n"
        finally:
            on_close()

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
