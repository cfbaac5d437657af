"""Background tasks that cannot end silently.

The control plane runs loops nobody awaits: the registry watch (file polling or Redis pub/sub),
the session-key watch, the retry of a registry rejected for an unreadable credential. A bare
`asyncio.create_task` whose coroutine raises just stops, and its exception is reported only when
the task object is garbage-collected, if ever: propagation to Envoy stopped with nothing logged.
Every such loop runs under `Supervisor.start` instead: an exception is logged with its
traceback, counted and shown in `/status` (`tasks`), and the loop is started again after a
backoff, so a bug in one iteration costs that iteration, never every later change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcpgw.log import get_logger
from mcpgw.xds.stream import iso

log = get_logger(__name__)

# A failing loop is restarted after MIN_BACKOFF_S, doubling up to MAX_BACKOFF_S while it keeps
# failing: fast recovery from a one-off error, no busy loop (and no log flood) from a persistent one.
MIN_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0


@dataclass
class TaskHealth:
    """What `/status` shows of one supervised task."""

    name: str
    running: bool = True
    restarts: int = 0
    failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "restarts": self.restarts,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_error_at": iso(self.last_error_at),
        }


class Supervisor:
    def __init__(self, min_backoff_s: float = MIN_BACKOFF_S, max_backoff_s: float = MAX_BACKOFF_S) -> None:
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.tasks: dict[str, TaskHealth] = {}

    def start(
        self, name: str, run: Callable[[], Awaitable[None]], *, until_done: bool = False
    ) -> asyncio.Task[None]:
        """Run `run()` in a task, again whenever it raises (and, unless `until_done`, when it returns).

        `until_done`: the loop may finish (a retry loop that succeeded); only an exception restarts it.
        Cancelling the returned task stops it for good.
        """
        health = self.tasks.setdefault(name, TaskHealth(name))
        health.running = True
        return asyncio.create_task(self._supervise(health, run, until_done), name=name)

    async def _supervise(
        self, health: TaskHealth, run: Callable[[], Awaitable[None]], until_done: bool
    ) -> None:
        backoff = self.min_backoff_s
        try:
            while True:
                started = time.monotonic()
                try:
                    await run()
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    health.failures += 1
                    health.last_error = f"{type(error).__name__}: {error}"
                    health.last_error_at = time.time()
                    log.error(
                        "task_failed",
                        exc_info=True,
                        task=health.name,
                        error=health.last_error,
                        restart_in=backoff,
                    )
                else:
                    if until_done:
                        return
                    log.error("task_ended", task=health.name, restart_in=backoff)
                if time.monotonic() - started > self.max_backoff_s:
                    backoff = self.min_backoff_s  # it ran well for a while: this is a new failure
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                health.restarts += 1
                log.info("task_restarted", task=health.name, restarts=health.restarts)
        finally:
            health.running = False

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: health.to_dict() for name, health in sorted(self.tasks.items())}
