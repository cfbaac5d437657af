"""A real Prometheus server for tests: Debian's `prometheus` on a free loopback port.

    async with running_prometheus(tmp_path, {"controlplane": [f"127.0.0.1:{port}"]}) as prom:
        await prom.wait_up()                        # every target scraped successfully once
        value = await prom.value('mcpgw_controlplane_registry_servers')
        await prom.eventually('mcpgw_controlplane_xds_acks_total{type="lds"} > 0', 20, "an LDS ACK")

A job is a scrape target list plus, optionally, its `metrics_path` and extra scrape settings
(`Job`). Prometheus scrapes every second, keeps its data in the test's tmp directory and is
stopped (then killed if it lingers) when the block ends. Tests that need it fail with an
install hint when the binary is missing (`make prometheus`); they never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from mcpgw.stack import free_port
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]
# The rules mcpgw ships (deploy/prometheus/*rules.yaml): load them to see alerts fire in a test.
SHIPPED_RULES = tuple(sorted((ROOT / "deploy" / "prometheus").glob("*rules.yaml")))
INSTALL_HINT = "prometheus is not installed: run `make prometheus` (apt-get install prometheus)"
SCRAPE_INTERVAL = "1s"


@dataclass(frozen=True)
class Job:
    """One scrape job: `targets` as host:port, scraped at `metrics_path`."""

    targets: Sequence[str]
    metrics_path: str = "/metrics"
    # Further scrape_config fields, e.g. {"authorization": {"credentials": "..."}}.
    extra: Mapping[str, Any] = field(default_factory=dict)


def binary(name: str = "prometheus") -> str:
    """The path of `prometheus` or `promtool`; fails loudly when missing."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(INSTALL_HINT)
    return path


def config(jobs: Mapping[str, Job | Sequence[str]], rule_files: Sequence[Path] = ()) -> dict[str, Any]:
    """The prometheus.yml for `jobs` (a bare target list is a Job at /metrics)."""
    scrape_configs = []
    for name, job in jobs.items():
        job = job if isinstance(job, Job) else Job(tuple(job))
        scrape_configs.append(
            {
                "job_name": name,
                "metrics_path": job.metrics_path,
                "static_configs": [{"targets": list(job.targets)}],
                **job.extra,
            }
        )
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": scrape_configs,
    }


class Prometheus:
    """A started Prometheus; `query` and friends talk to its HTTP API."""

    def __init__(self, workdir: Path, process: subprocess.Popen[bytes], port: int) -> None:
        self.workdir = workdir
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / "prometheus.log"
        self._client = httpx.AsyncClient(base_url=self.url, timeout=10)

    async def _get(self, path: str, **params: str) -> Any:
        response = await self._client.get(path, params=params)
        body = response.json()
        assert response.status_code == 200 and body.get("status") == "success", (
            f"Prometheus {path} {params}: {response.status_code} {body}"
        )
        return body["data"]

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector `promql` evaluates to now: [{"metric": {...}, "value": [t, "v"]}]."""
        data = await self._get("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", f"{promql!r} is a {data['resultType']}, not a vector"
        result: list[dict[str, Any]] = data["result"]
        return result

    async def value(self, promql: str) -> float | None:
        """The single sample `promql` evaluates to (None: no sample); more than one fails."""
        result = await self.query(promql)
        assert len(result) <= 1, f"{promql!r} has {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None

    async def eventually(self, promql: str, timeout: float, what: str) -> list[dict[str, Any]]:
        """Poll until `promql` returns at least one sample (a comparison filters out the others)."""
        found: list[dict[str, Any]] = await eventually(
            lambda: self.query(promql), timeout, what, interval=0.5
        )
        return found

    async def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = (await self._get("/api/v1/targets"))["activeTargets"]
        return active

    async def wait_up(self, timeout: float = 30.0) -> None:
        """Until every target has been scraped successfully (health "up")."""

        async def all_up() -> bool:
            targets = await self.targets()
            return bool(targets) and all(t["health"] == "up" for t in targets)

        await eventually(all_up, timeout, "every Prometheus target up", interval=0.5)

    async def rules(self) -> list[dict[str, Any]]:
        """The loaded rule groups (`/api/v1/rules`)."""
        groups: list[dict[str, Any]] = (await self._get("/api/v1/rules"))["groups"]
        return groups

    async def alerts(self, name: str | None = None) -> list[dict[str, Any]]:
        """Active alerts (pending or firing) of the loaded rules, optionally only `name`."""
        found: list[dict[str, Any]] = (await self._get("/api/v1/alerts"))["alerts"]
        return [a for a in found if name is None or a["labels"].get("alertname") == name]

    async def close(self) -> None:
        await self._client.aclose()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 10)


@contextlib.asynccontextmanager
async def running_prometheus(
    workdir: Path,
    jobs: Mapping[str, Job | Sequence[str]],
    rule_files: Sequence[Path] = (),
    ready_timeout: float = 30.0,
) -> AsyncIterator[Prometheus]:
    """Prometheus scraping `jobs` every second, on a free 127.0.0.1 port, data under `workdir`."""
    executable = binary()
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config(jobs, rule_files), sort_keys=False))
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            executable,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    prometheus = Prometheus(workdir, process, port)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            assert process.poll() is None, (
                f"prometheus exited with {process.returncode}: {prometheus.log_path.read_text()[-2000:]}"
            )
            with contextlib.suppress(httpx.HTTPError):
                if (await prometheus._client.get("/-/ready")).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"prometheus ready within {ready_timeout}s"
            await asyncio.sleep(0.2)
        yield prometheus
    finally:
        await prometheus.close()
