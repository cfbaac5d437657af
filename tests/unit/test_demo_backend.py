"""The demo backend keeps a bounded record of the requests it saw (found by the soak, issue 14)."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from mcpgw.demo.petstore import MAX_RECORDED, RECORDED, create_app


async def test_the_request_record_keeps_only_the_latest() -> None:
    app = create_app()
    async with TestClient(TestServer(app)) as client:
        for index in range(2 * MAX_RECORDED + 5):
            response = await client.get(f"/v1/pets/{index % 3 + 1}?n={index}")
            assert response.status == 200
        recorded = app[RECORDED]
        # Never more than twice the bound, never fewer than the bound, the newest last and in order.
        assert MAX_RECORDED <= len(recorded) <= 2 * MAX_RECORDED
        assert recorded[-1].query == f"n={2 * MAX_RECORDED + 4}"
        numbers = [int(seen.query.removeprefix("n=")) for seen in recorded]
        assert numbers == list(range(numbers[0], 2 * MAX_RECORDED + 5))
