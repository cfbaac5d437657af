"""Supervised background tasks: a failure is logged, counted, shown, and the loop restarted."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from mcpgw.supervise import Supervisor
from tests.waiting import eventually


async def test_a_failing_loop_is_restarted_and_its_failure_shown(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor(min_backoff_s=0.01, max_backoff_s=0.05)
    runs = []

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise KeyError("state of a deleted server")
        await asyncio.Event().wait()

    task = supervisor.start("registry-watch", loop)
    try:
        await eventually(lambda: len(runs) == 3, 5, "two restarts")
        health = supervisor.status()["registry-watch"]
        assert health["running"] and health["restarts"] == 2 and health["failures"] == 2
        assert health["last_error"] == "KeyError: 'state of a deleted server'"
        assert [r.getMessage() for r in caplog.records].count("task_failed") == 2
        assert all(r.exc_info for r in caplog.records if r.getMessage() == "task_failed")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not supervisor.status()["registry-watch"]["running"]


async def test_a_loop_that_returns_is_restarted_unless_it_may_finish() -> None:
    supervisor = Supervisor(min_backoff_s=0.01, max_backoff_s=0.05)
    runs: list[str] = []

    async def once() -> None:
        runs.append("ran")

    await supervisor.start("registry-retry", once, until_done=True)
    assert runs == ["ran"] and not supervisor.status()["registry-retry"]["running"]

    task = supervisor.start("keys-watch", once)
    await eventually(lambda: len(runs) >= 3, 5, "a returning watch started again")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
