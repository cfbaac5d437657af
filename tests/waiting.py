"""Waiting for something the system under test does asynchronously, bounded in time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(
    check: Callable[[], Any | Awaitable[Any]],
    timeout: float,
    what: str,
    *,
    ignore: tuple[type[BaseException], ...] = (),
    interval: float = 0.05,
) -> Any:
    """Poll `check` (plain or async) until it returns something truthy, and return that.

    An exception of a type in `ignore` counts as "not yet" (e.g. `OSError` while a process
    starts). After `timeout` seconds the test fails, saying `what` did not happen.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except ignore:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        await asyncio.sleep(interval)
