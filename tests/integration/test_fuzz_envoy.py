"""Fuzzing through the real path: mutated requests at a real Envoy running the real filter.

A REST server with every tool of `test_rest_tools.py` and a `type: mcp` server (the small
upstream of `test_deep_json.py`) behind a two-worker Envoy. `envoyfuzz` mutates the native
targets' seeds and sends the bytes raw; every answer must be well-formed HTTP with a documented
status, and afterwards Envoy must still run with no Wasm VM failed, reloaded or created, and no
VM failure in its log.

Bounded: `FUZZ_ENVOY_CASES` requests (default 300) within `FUZZ_ENVOY_SECONDS` (default 20 s), so
`make test` runs it as a smoke; `make fuzz` runs it for `FUZZ_SECONDS`. `FUZZ_ENVOY_SEED` repeats
a run (the seed is printed on failure).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import httpx
import pytest
import yaml

from mcpgw.httpserve import serve
from tests.integration import envoyfuzz
from tests.integration import test_deep_json as deep
from tests.integration import test_rest_tools as rest
from tests.integration.conftest import running_gateway
from tests.integration.mcphttp import open_session
from tests.integration.test_mcp_upstream import wait_served

CASES = int(os.environ.get("FUZZ_ENVOY_CASES", "300"))
SECONDS = float(os.environ.get("FUZZ_ENVOY_SECONDS", "20"))


# The run's own bound plus the stack's start and stop.
@pytest.mark.timeout(SECONDS + 150)
async def test_mutated_requests_get_documented_answers_and_no_vm_fails(tmp_path: Path) -> None:
    seed = int(os.environ.get("FUZZ_ENVOY_SEED", random.randrange(1 << 32)))
    secret_file = tmp_path / "api-key"
    secret_file.write_text(rest.FILE_KEY + "\n")
    rest_backend = await serve(rest.backend_app(), "127.0.0.1", 0)
    mcp_backend = await serve(deep.backend_app(), "127.0.0.1", 0)
    registry = tmp_path / "registry"
    registry.mkdir()
    documents = [rest.registry_document(rest_backend, secret_file), deep.mcp_server("up", mcp_backend, None)]
    documents[0]["allowedOrigins"] = ["https://app.example.com"]
    (registry / "fuzz.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    previous = os.environ.get("MCPGW_CRED_TEST_TOKEN")
    os.environ["MCPGW_CRED_TEST_TOKEN"] = rest.ENV_TOKEN
    try:
        async with running_gateway(tmp_path, registry, envoy_concurrency=2) as gateway:
            envoy = gateway.stack.envoy
            assert envoy is not None
            base = gateway.stack.mcp_base_url
            paths = {"rest": "/mcp/default/rest", "mcp": "/mcp/default/up"}
            sessions = {}
            async with httpx.AsyncClient(timeout=10) as http:
                for kind, path in paths.items():
                    await wait_served(base + path)
                    for name in (kind, kind + "-ended"):
                        sessions[name] = (await open_session(http, base + path))["mcp-session-id"]
            before = envoyfuzz.vm_counters(envoy)
            offset = envoy.log_path.stat().st_size
            host, port = httpx.URL(base).host, httpx.URL(base).port
            assert port is not None
            seeds = envoyfuzz.seeds(paths, sessions)
            outcome = await envoyfuzz.run(
                host, port, seeds, seed=seed, max_cases=max(CASES, len(seeds)), seconds=SECONDS
            )
            problems = outcome.failures + envoyfuzz.check_envoy(envoy, before, offset)
            # Still serving: a plain request after the storm.
            async with httpx.AsyncClient(timeout=10) as http:
                sid = await open_session(http, base + paths["rest"])
                assert sid["mcp-session-id"]
            report = (
                f"seed {seed}: {outcome.sent} requests, statuses {dict(sorted(outcome.statuses.items()))}"
            )
            print(report)
            assert not problems, report + "\n" + "\n".join(problems[:20])
            assert outcome.sent >= min(CASES, 50), report
            assert len(outcome.statuses) >= 4, report  # the mutations reached more than one kind of answer
    finally:
        if previous is None:
            os.environ.pop("MCPGW_CRED_TEST_TOKEN", None)
        await rest_backend.close()
        await mcp_backend.runner.cleanup()
