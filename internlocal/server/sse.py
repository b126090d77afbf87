"""The one server-sent-events response every streaming endpoint returns, framed as OpenAI streams are."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from internlocal.engines.base import Generation


def sse_response(
    events: AsyncIterator[dict[str, Any]], generation: Generation, *, on_close: Callable[[], None]
) -> StreamingResponse:
    """``data: <json>`` per event, then ``data: [DONE]`` once the generation has ended.

    A stream whose client went away (the generation has no result) stops without ``[DONE]``.
    ``on_close`` runs however the stream ends (it releases the request's admission).
    """

    async def body() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
            if generation.result is not None:
                yield "data: [DONE]\n\n"
        finally:
            on_close()

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
