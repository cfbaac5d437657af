"""The bundled demo REST backend: a tiny in-memory pet store.

`mcpgw up` runs it so the demo registry has something real to call; tests run it in-process
and read `RecordedRequest`s to check exactly what the gateway sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SEED_PETS = (
    {"id": 1, "name": "Rex", "tag": "dog"},
    {"id": 2, "name": "Tom", "tag": "cat"},
    {"id": 3, "name": "Nemo", "tag": "fish"},
)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = field(repr=False)


RECORDED = web.AppKey("recorded", list[RecordedRequest])
# The most recent requests kept in `app[RECORDED]`: between this many and twice as many. Tests
# read the last few; `mcpgw up` and `mcpgw demo-backend` run for days, and a record of every
# request grew the demo backend by ~2 MiB per 10 minutes under the soak's load.
MAX_RECORDED = 1_000
PETS = web.AppKey("pets", dict[int, dict[str, Any]])


@web.middleware
async def record_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    """Append every request, byte for byte, to `app[RECORDED]` (which the app must set); only the
    latest `MAX_RECORDED` to `2 * MAX_RECORDED` are kept."""
    body = await request.read()
    # The raw target, exactly as sent: tests compare percent-encoding byte for byte.
    path, _, query = request.raw_path.partition("?")
    recorded = request.app[RECORDED]
    if len(recorded) >= 2 * MAX_RECORDED:
        # In one cut, so appending stays O(1) on average.
        del recorded[:-MAX_RECORDED]
    recorded.append(
        RecordedRequest(
            method=request.method,
            path=path,
            query=query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
    )
    return await handler(request)


async def _list_pets(request: web.Request) -> web.Response:
    pets = list(request.app[PETS].values())
    if tag := request.query.get("tag"):
        pets = [p for p in pets if p["tag"] == tag]
    limit = request.query.get("limit", "")
    if limit.isdigit():
        pets = pets[: int(limit)]
    return web.json_response(pets)


async def _get_pet(request: web.Request) -> web.Response:
    pet_id = request.match_info["id"]
    pet = request.app[PETS].get(int(pet_id)) if pet_id.isdigit() else None
    if pet is None:
        return web.json_response({"error": f"pet {pet_id} not found"}, status=404)
    fields = [f for f in request.query.get("fields", "").split(",") if f]
    return web.json_response({k: v for k, v in pet.items() if not fields or k in fields})


async def _create_pet(request: web.Request) -> web.Response:
    try:
        data = json.loads(await request.read())
    except ValueError:
        return web.json_response({"error": "body must be JSON"}, status=400)
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return web.json_response({"error": "name is required"}, status=422)
    pets = request.app[PETS]
    pet = {"id": max(pets, default=0) + 1, "name": data["name"], "tag": data.get("tag", "")}
    pets[pet["id"]] = pet
    return web.json_response(pet, status=201)


def create_app() -> web.Application:
    app = web.Application(middlewares=[record_requests])
    app[RECORDED] = []
    app[PETS] = {p["id"]: dict(p) for p in SEED_PETS}
    app.router.add_get("/v1/pets", _list_pets)
    app.router.add_get("/v1/pets/{id}", _get_pet)
    app.router.add_post("/v1/pets", _create_pet)
    return app
