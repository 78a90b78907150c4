"""The benchmark's baseline: a minimal Litestar endpoint that parses a JSON body and answers
JSON, served by the same ASGI server and settings as `jakartaone serve`."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, post


@post("/echo", status_code=201)
async def echo(data: dict[str, Any]) -> dict[str, Any]:
    return {"received": len(data)}


app = Litestar(route_handlers=[echo], logging_config=None, openapi_config=None)
