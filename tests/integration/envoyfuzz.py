"""Mutation fuzzing through the real path: raw HTTP/1.1 requests at a real Envoy running the filter.

Requests start from the native fuzz targets' seeds (`wasm-filters/mcp-server/fuzz/corpus/request` and
`proxy`: the MCP specification's examples and one tools/call per REST test case, each with the
headers the gateway reads) and are mutated: bytes flipped, inserted, dropped and duplicated,
dictionary tokens spliced in, the body replaced by JSON nested 10,000 to 100,000 levels deep,
numbers of every size, every control character and invalid UTF-8 in bodies and in each header the
gateway reads, header values past Envoy's limits, odd methods and paths. The bytes go out as
written (a raw socket, one connection per request), so Envoy's own codec sees them too.

Every answer must be a well-formed HTTP/1.1 response (status line, headers, a body whose length
matches its framing) with a documented status; a JSON content type must carry JSON. What
`check_envoy` then asks of the run is in its docstring. Deterministic for a seed (printed).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mcpgw.envoyproc import EnvoyProcess

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "wasm-filters" / "mcp-server" / "fuzz" / "corpus"
# The seeds' server paths (fuzz/seeds.py), replaced by the paths under test.
SEED_REST_PATH = "/mcp/default/rest"
SEED_MCP_PATH = "/mcp/team/weather"

# Statuses an MCP request may get, documented in docs/security.md ("Fuzzing" lists them): the
# filter's own answers, and Envoy's where it answers first (400 codec errors, 404 no route,
# 408 timeouts, 413 body over the listener buffer, 431 headers over its limit, 501 methods its
# codec does not implement, 503 no filter configuration yet). The test's `type: mcp` upstream
# answers no 4xx of its own, which the filter would pass on.
DOCUMENTED = frozenset({200, 202, 204, 400, 401, 403, 404, 405, 406, 408, 413, 431, 500, 501, 502, 503, 504})

GATEWAY_HEADERS = [
    "origin",
    "access-control-request-method",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "content-type",
    "x-request-id",
    "authorization",
    "x-api-key",
]
TOKENS = [
    b'"jsonrpc"',
    b'"2.0"',
    b'"id"',
    b'"method"',
    b'"params"',
    b'"tools/call"',
    b'"tools/list"',
    b'"initialize"',
    b'"name"',
    b'"arguments"',
    b'"_meta"',
    b"null",
    b"true",
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b":",
    b'"',
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"1e999999",
    b"-0",
    b"1e-999999",
    b"123456789012345678901234567890123456789",
    b"\xff",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\x00",
]
NUMBERS = ["0", "-0", "1e999999", "-1e999999", "4.9e-324", "1e-400", "1" * 400, "18446744073709551616"]
CONTROL = bytes(range(0x20)) + b"\x7f"
INVALID_UTF8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80"]
METHODS = ["POST"] * 12 + ["GET", "DELETE", "OPTIONS", "PUT", "HEAD", "PATCH", "BREW", "post"]


@dataclass
class Case:
    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def wire(self, host: str) -> bytes:
        head = [f"{self.method} {self.path} HTTP/1.1".encode(), f"host: {host}".encode()]
        # CR and LF cannot be in a header line: they would end it, and could start a second
        # request on the connection (and so a second answer). Every other byte goes as it is.
        head += [crlf_free(name) + b": " + crlf_free(value) for name, value in self.headers]
        head += [f"content-length: {len(self.body)}".encode(), b"connection: close"]
        return b"\r\n".join(head) + b"\r\n\r\n" + self.body


def crlf_free(value: bytes) -> bytes:
    return value.replace(b"\r", b"").replace(b"\n", b"")


@dataclass
class Outcome:
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    sent: int = 0


def seeds(paths: dict[str, str], sessions: dict[str, str]) -> list[Case]:
    """The request and proxy seeds, pointed at `paths` ({"rest": ..., "mcp": ...}), `@valid` replaced
    by a session id of that server (`sessions[kind]`; `sessions[kind + "-ended"]` for DELETEs)."""
    out = []
    for kind, target, seed_path in (("rest", "request", SEED_REST_PATH), ("mcp", "proxy", SEED_MCP_PATH)):
        for file in sorted((CORPUS / target).iterdir()):
            parts = file.read_bytes().split(b"\0")
            method, path, headers = "POST", paths[kind], []
            for line in parts[0].split(b"\n"):
                name, _, value = line.partition(b": ")
                if name == b":method":
                    method = value.decode("latin-1")
                elif name == b":path":
                    path = value.decode("latin-1").replace(seed_path, paths[kind])
                elif name and not name.startswith(b":") and name != b"content-length":
                    # A DELETE ends its session: not the one every other seed uses.
                    valid = sessions[kind + "-ended" if method == "DELETE" else kind]
                    headers.append((name, value.replace(b"@valid", valid.encode())))
            out.append(Case(method, path, headers, parts[1] if len(parts) > 1 else b""))
    return out


def nested(rng: random.Random) -> bytes:
    depth = rng.choice([10_000, 30_000, 100_000])
    if rng.random() < 0.5:
        inner = b"[" * depth + b"1" + b"]" * depth
    else:
        inner = b'{"a":' * depth + b"1" + b"}" * depth
    if rng.random() < 0.3:
        inner = inner[: len(inner) // 2]  # unterminated
    return (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"t":'
        + inner
        + b"}}}"
    )


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        at = rng.randint(0, len(b))
        if op == 0 and b:
            b[min(at, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[at:at] = rng.choice(TOKENS)
        elif op == 2 and b:
            del b[at : at + rng.randint(1, 16)]
        elif op == 3 and b:
            start = rng.randrange(len(b))
            b[at:at] = b[start : start + rng.randint(1, 64)]
        elif op == 4:
            b[at:at] = rng.choice(NUMBERS).encode()
        else:
            b[at:at] = rng.choice([*INVALID_UTF8, bytes([rng.choice(CONTROL)])])
    return bytes(b)


def hostile_value(rng: random.Random) -> bytes:
    choice = rng.randrange(6)
    if choice == 0:
        return bytes([rng.choice(CONTROL)]) * rng.randint(1, 3)  # Envoy's codec refuses most: 400
    if choice == 1:
        return rng.choice(INVALID_UTF8) * rng.randint(1, 8)
    if choice == 2:
        return b"a" * rng.choice([1000, 8000, 70_000])  # past Envoy's 60 KiB of headers: 431
    if choice == 3:
        return rng.choice([b"", b" ", b"2026-07-28", b"1999-01-01", b"=?base64?AAAA?=", b"*/*", b"text/html"])
    if choice == 4:
        return b"\t" + bytes(rng.randint(0x80, 0xFF) for _ in range(rng.randint(1, 20)))
    return rng.choice(NUMBERS).encode()


def mutate(rng: random.Random, seed: Case) -> Case:
    case = Case(seed.method, seed.path, list(seed.headers), seed.body)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(10)
        if op <= 3:
            case.body = mutate_bytes(rng, case.body)
        elif op == 4:
            case.body = nested(rng)
        elif op == 5:
            case.headers.append((rng.choice(GATEWAY_HEADERS).encode(), hostile_value(rng)))
        elif op == 6 and case.headers:
            i = rng.randrange(len(case.headers))
            case.headers[i] = (case.headers[i][0], mutate_bytes(rng, case.headers[i][1]))
        elif op == 7:
            case.method = rng.choice(METHODS)
        elif op == 8:
            suffix = rng.choice(
                ["", "/", "/sse", "/message?sessionId=x", "?a=%00&b=%zz", "/../x", "?" + "q" * 3000]
            )
            case.path = case.path.split("?")[0] + suffix
        else:
            body = rng.choice([b"", CONTROL, json.dumps({"jsonrpc": "2.0", "id": CONTROL.decode()}).encode()])
            case.body = body
    return case


async def exchange(
    host: str, port: int, case: Case, timeout: float = 20.0
) -> tuple[int, dict[bytes, bytes], bytes]:
    """Sends `case` on a fresh connection and reads the whole answer (Envoy closes it after)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        try:
            writer.write(case.wire(f"{host}:{port}"))
            await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            pass  # Envoy may answer (400/413/431) and close while the body is still being written.
        raw = await asyncio.wait_for(read_answer(reader, head_only=case.method == "HEAD"), timeout)
    finally:
        writer.close()
    return parse_response(raw, head_only=case.method == "HEAD")


async def read_answer(reader: asyncio.StreamReader, head_only: bool) -> bytes:
    """Until Envoy closes the connection; for an event stream (GET .../sse opened a session) or an
    answer to HEAD, only its head: the stream stays open for hours, HEAD has no body."""
    raw = b""
    while chunk := await reader.read(65536):
        raw += chunk
        head, sep, body = raw.partition(b"\r\n\r\n")
        if not sep:
            continue
        lower = head.lower()
        if head_only or b"text/event-stream" in lower:
            return head + sep
        # Complete by its framing: Envoy keeps a closing connection open for its delayed-close
        # timeout (1 s) waiting for us to close first.
        length = re.search(rb"\r\ncontent-length:\s*(\d+)", lower)
        if length and len(body) >= int(length.group(1)):
            return raw
        if not length and b"chunked" in lower and body.endswith(b"0\r\n\r\n"):
            return raw
        if not length and b"chunked" not in lower and re.match(rb"http/1\.1 (1\d\d|204|304)", lower):
            return raw
    return raw


_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*")


def parse_response(raw: bytes, head_only: bool = False) -> tuple[int, dict[bytes, bytes], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response; ValueError when malformed.
    `head_only`: the answer to HEAD, whose content-length describes a body it does not carry."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError(f"no complete response head: {raw[:200]!r}")
    lines = head.split(b"\r\n")
    m = _STATUS.fullmatch(lines[0])
    if m is None:
        raise ValueError(f"bad status line: {lines[0][:200]!r}")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name.strip() != name:
            raise ValueError(f"bad header line: {line[:200]!r}")
        headers[name.lower()] = value.strip()
    status = int(m.group(1))
    if head_only:
        if body:
            raise ValueError(f"a body of {len(body)} bytes in the answer to HEAD")
    elif b"content-length" in headers:
        if len(body) != int(headers[b"content-length"]):
            raise ValueError(f"body of {len(body)} bytes, content-length {headers[b'content-length']!r}")
    elif headers.get(b"content-type", b"").startswith(b"text/event-stream"):
        body = b""
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = dechunk(body)
    return status, headers, body


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        if not sep:
            raise ValueError("truncated chunk size")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        if data[size : size + 2] != b"\r\n":
            raise ValueError("bad chunk framing")
        out += data[:size]
        data = data[size + 2 :]


def check_answer(case: Case, status: int, headers: dict[bytes, bytes], body: bytes) -> str | None:
    if status not in DOCUMENTED:
        return f"undocumented status {status}: {body[:200]!r}"
    if headers.get(b"content-type", b"").startswith(b"application/json") and body:
        try:
            json.loads(body)
        except ValueError:
            return f"status {status}: content-type JSON but the body is not: {body[:200]!r}"
    return None


async def run(
    host: str,
    port: int,
    seed_cases: list[Case],
    *,
    seed: int,
    max_cases: int,
    seconds: float,
    concurrency: int = 4,
) -> Outcome:
    """At most `max_cases` mutated requests, for at most `seconds`, `concurrency` at a time."""
    rng = random.Random(seed)
    outcome = Outcome()
    deadline = time.monotonic() + seconds

    # Made as they are sent (a case may be megabytes), in one order: the same seed gives the
    # same requests; the seeds themselves go first.
    def generate() -> Iterator[Case]:
        for i in range(max_cases):
            yield seed_cases[i] if i < len(seed_cases) else mutate(rng, rng.choice(seed_cases))

    cases = generate()

    async def worker() -> None:
        while time.monotonic() < deadline and (case := next(cases, None)) is not None:
            outcome.sent += 1
            started = time.monotonic()
            try:
                status, headers, body = await exchange(host, port, case)
                if os.environ.get("FUZZ_ENVOY_DEBUG"):
                    print(
                        f"{time.monotonic() - started:.2f}s {status} {case.method} {case.path[:60]} "
                        f"{len(case.body)} {body[:120]!r}"
                    )
            except (TimeoutError, ValueError, OSError) as e:
                outcome.failures.append(f"{case.method} {case.path[:80]}: {type(e).__name__}: {e}")
                continue
            outcome.statuses[status] += 1
            problem = check_answer(case, status, headers, body)
            if problem:
                outcome.failures.append(f"{case.method} {case.path[:80]}: {problem}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcome


def vm_counters(envoy: EnvoyProcess) -> dict[str, int]:
    """Wasm VMs created and reloaded: a VM that failed and was reloaded (FAIL_RELOAD) shows here."""
    return {
        k: v
        for k, v in envoy.stats("wasm.").items()
        if k.endswith((".created", "vm_reload_success", "vm_reload_failure", "vm_reload_backoff"))
    }


# What Envoy logs when a Wasm VM fails (a trap, an abort, a panic in the filter) or restarts.
VM_FAILURE = re.compile(
    r"(?i)(panic|wasm vm failed|function: proxy_on_\w+ failed|runtime error|unreachable|vm_reload)"
)


def check_envoy(envoy: EnvoyProcess, before: dict[str, int], log_offset: int) -> list[str]:
    """Envoy still runs, no Wasm VM was created or reloaded during the run, and its log has no VM
    failure since `log_offset`."""
    problems = []
    process = envoy.process
    if process is None or process.returncode is not None:
        problems.append(f"Envoy exited: {None if process is None else process.returncode}")
        return problems
    after = vm_counters(envoy)
    if after != before:
        problems.append(f"Wasm VM counters changed: {before} -> {after}")
    with envoy.log_path.open("rb") as f:
        f.seek(log_offset)
        for line in f.read().decode(errors="replace").splitlines():
            if VM_FAILURE.search(line):
                problems.append(f"Envoy log: {line[:300]}")
    return problems
