"""The through-Envoy fuzzer's own checks fail when they should (tests/integration/envoyfuzz.py)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.integration import envoyfuzz


def test_malformed_answers_are_caught() -> None:
    good = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"
    assert envoyfuzz.parse_response(good) == (
        200,
        {b"content-length": b"2", b"content-type": b"application/json"},
        b"{}",
    )
    for bad in (
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}",  # truncated
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n",  # no end of head
        b"HTTP/1.0 200 OK\r\n\r\n",
        b"",
        b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n",
    ):
        with pytest.raises(ValueError):
            envoyfuzz.parse_response(bad)
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    assert envoyfuzz.parse_response(chunked)[2] == b"{}"
    case = envoyfuzz.Case("POST", "/", [], b"")
    assert envoyfuzz.check_answer(case, 418, {}, b"") is not None
    assert envoyfuzz.check_answer(case, 200, {b"content-type": b"application/json"}, b"{") is not None
    assert envoyfuzz.check_answer(case, 400, {b"content-type": b"application/json"}, b"{}") is None


class FakeEnvoy:
    def __init__(self, log: Path, counters: dict[str, int], returncode: int | None = None) -> None:
        self.log_path = log
        self.counters = counters
        self.process: Any = type("P", (), {"returncode": returncode})()

    def stats(self, prefix: str = "") -> dict[str, int]:
        return dict(self.counters)


def test_a_failed_vm_or_a_dead_envoy_is_caught(tmp_path: Path) -> None:
    log = tmp_path / "envoy.log"
    log.write_text("[info] started\n")
    counters = {"wasm.envoy.wasm.runtime.v8.created": 2}
    envoy: Any = FakeEnvoy(log, counters)
    offset = log.stat().st_size
    assert envoyfuzz.check_envoy(envoy, envoyfuzz.vm_counters(envoy), offset) == []
    with log.open("a") as f:
        f.write("[critical] wasm log: panic: index out of bounds\n")
    assert any("panic" in p for p in envoyfuzz.check_envoy(envoy, envoyfuzz.vm_counters(envoy), offset))
    reloaded: Any = FakeEnvoy(log, counters | {"wasm.envoy.wasm.runtime.v8.created": 3})
    assert any("counters changed" in p for p in envoyfuzz.check_envoy(reloaded, counters, log.stat().st_size))
    dead: Any = FakeEnvoy(log, counters, returncode=-11)
    assert envoyfuzz.check_envoy(dead, counters, 0) == ["Envoy exited: -11"]


def test_mutations_reach_the_extremes() -> None:
    rng = random.Random(7)
    seed = envoyfuzz.Case(
        "POST", "/mcp/default/rest", [(b"accept", b"application/json")], b'{"jsonrpc":"2.0"}'
    )
    cases = [envoyfuzz.mutate(rng, seed) for _ in range(2000)]
    assert max(c.body.count(b"[") + c.body.count(b"{") for c in cases) >= 10_000
    assert any(any(v and v[0] < 0x20 for _, v in c.headers) for c in cases)
    assert any(len(v) >= 70_000 for c in cases for _, v in c.headers)
    assert any(b"\xff" in c.body or b"\xed\xa0\x80" in c.body for c in cases)
    assert {c.method for c in cases} >= {"POST", "GET", "DELETE", "OPTIONS", "BREW"}
    # Deterministic for a seed.
    again = random.Random(7)
    assert [envoyfuzz.mutate(again, seed).body for _ in range(50)] == [c.body for c in cases[:50]]
