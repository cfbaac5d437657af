#!/usr/bin/env python3
"""Seeds and extremes for the filter's fuzz targets (src/fuzz.zig has the input formats).

    python fuzz/seeds.py             rewrite fuzz/configs/ and fuzz/corpus/ (committed, small)
    python fuzz/seeds.py --extremes DIR
                                     write the extreme inputs into DIR/<target>/ (not committed:
                                     `run.py` makes them before every run)

The configurations are the control plane's own output (`filter_config`) for the registry of
`tests/integration/test_rest_tools.py` (every tool feature the REST tests cover) and a `type: mcp`
server, with sessions and allowed origins. Request seeds are the MCP specification's example
messages plus one tools/call per REST test case, each with the headers the gateway reads.
The extremes reach what mutation rarely does: nesting 10,000 to 30,000 levels deep (every limit is
at most 1,000), numbers of every size, every control character, invalid UTF-8, and each header
the gateway reads with hostile values.

Run from the repository's venv (`.venv/bin/python`): it imports `mcpgw` and the tests.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))

REST_PATH = "/mcp/default/rest"
MCP_PATH = "/mcp/team/weather"
VERSIONS = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"]
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}
# The headers the filter reads (main.zig's onRequestHeaders), in the order it reads them.
GATEWAY_HEADERS = [
    ":path",
    ":method",
    "x-request-id",
    "origin",
    "access-control-request-method",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "content-length",
    "authorization",
    "x-api-key",
]


def configs() -> dict[str, str]:
    """The two configurations the request/answer/proxy targets serve, as the control plane writes them."""
    from mcpgw.registry.model import RegistrySnapshot
    from mcpgw.registry.secrets import resolve
    from mcpgw.registry.validate import parse_server
    from mcpgw.sessions.keys import SessionKey, SessionSettings
    from mcpgw.translate.envoy import _config_suffix, _config_text
    from mcpgw.translate.filterconfig import filter_config
    from tests.integration.test_rest_tools import registry_document
    from tests.unit.test_mcp_upstream import SCHEMES, upstream_doc

    class Backend:
        port = 18080

    secret_file = Path(tempfile.mkdtemp()) / "api-key"
    secret_file.write_text("key-from-file\n")
    os.environ.setdefault("MCPGW_CRED_TEST_TOKEN", "tok-from-env")
    rest_doc = registry_document(Backend(), secret_file)  # type: ignore[arg-type]
    rest_doc["allowedOrigins"] = ["https://app.example.com"]
    mcp_doc = upstream_doc(
        path="/v2/mcp",
        allowTools=["forecast", "alerts", "echo"],
        tools=[
            {"name": "forecast", "description": "Forecast for a city."},
            {"name": "alerts", "title": "Alerts"},
        ],
        securitySchemes=SCHEMES,
        upstreamSecurity={"id": "upstreamKey"},
        limits={"maxResponseBytes": 65536},
        allowedOrigins=["https://app.example.com"],
    )
    # The session key the seeds' tokens were minted with is the test's own (never a real one).
    settings = SessionSettings(keys=(SessionKey(id="k1", secret=b"\xa1" * 32),))
    out = {}
    for name, doc in (("rest", rest_doc), ("mcp", mcp_doc)):
        server = parse_server(doc, f"{name}.yaml")
        snapshot = RegistrySnapshot((server,))
        text = _config_text(filter_config(server, snapshot, resolve(snapshot)), _config_suffix(settings))
        out[name] = json.dumps(json.loads(text), indent=1, ensure_ascii=False) + "\n"
    return out


def message(method: str | None, params: Any = None, id: Any = 1, meta: bool = False) -> bytes:
    m: dict[str, Any] = {"jsonrpc": "2.0"}
    if id is not None:
        m["id"] = id
    if method is not None:
        m["method"] = method
    if meta:
        params = dict(params or {})
        params["_meta"] = META
    if params is not None:
        m["params"] = params
    return json.dumps(m).encode()


def head(**headers: str) -> bytes:
    return "\n".join(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()).encode()


def spec_messages() -> list[tuple[dict[str, str], bytes]]:
    """The specification's example exchange (lifecycle, tools, ping, utilities) and its variants."""
    session = {"mcp_session_id": "@valid", "accept": "application/json, text/event-stream"}
    modern = {"mcp_protocol_version": "2026-07-28", "accept": "application/json, text/event-stream"}
    init = {
        "protocolVersion": "2025-06-18",
        "capabilities": {"roots": {"listChanged": True}, "sampling": {}, "elicitation": {}},
        "clientInfo": {"name": "ExampleClient", "title": "Example Client", "version": "1.0.0"},
    }
    out: list[tuple[dict[str, str], bytes]] = [
        ({"accept": "application/json, text/event-stream"}, message("initialize", init)),
        ({}, message("initialize", {**init, "protocolVersion": "2024-11-05"}, id="init-1")),
        (session, message("notifications/initialized", id=None)),
        (session | {"mcp_protocol_version": "2025-06-18"}, message("tools/list", {"cursor": "optional"})),
        (session, message("tools/list", id=2)),
        (session, message("ping", id="ping-7")),
        (session, message("resources/list", id=3)),
        (
            session,
            message("notifications/cancelled", {"requestId": "123", "reason": "User requested"}, id=None),
        ),
        (session, message(None, id=5)[:-1] + b',"result":{}}'),
        (session, b'{"jsonrpc":"2.0","id":6,"error":{"code":-32601,"message":"no"}}'),
        (session, b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]'),
        (session, b'{"jsonrpc":"1.0","id":1,"method":"ping"}'),
        (session, b'{"jsonrpc":"2.0","id":{},"method":"ping"}'),
        (session, b'{"jsonrpc":"2.0","id":1,"method":7}'),
        (session, b'{"jsonrpc":"2.0","id":1'),
        (modern | {"mcp_method": "server/discover"}, message("server/discover", {}, meta=True)),
        (modern | {"mcp_method": "tools/list"}, message("tools/list", {}, meta=True)),
        (
            modern | {"mcp_method": "tools/call", "mcp_name": "query-position-and-defaults"},
            message(
                "tools/call", {"name": "query-position-and-defaults", "arguments": {"q": "x"}}, meta=True
            ),
        ),
        ({"_method": "DELETE", "mcp_session_id": "@valid"}, b""),
        ({"_method": "GET"}, b""),
        ({"origin": "https://evil.example"}, message("ping")),
        (
            {
                "origin": "https://app.example.com",
                "_method": "OPTIONS",
                "access_control_request_method": "POST",
            },
            b"",
        ),
        ({"accept": "text/html"}, message("ping")),
        ({"content_length": "99999999999"}, message("ping")),
        ({"_path": REST_PATH + "/message?sessionId=abc"}, message("ping")),
        ({"_path": REST_PATH + "/sse", "_method": "GET", "accept": "text/event-stream"}, b""),
        (session | {"mcp_protocol_version": "1999-01-01"}, message("ping")),
    ]
    return out


def rest_calls() -> list[tuple[dict[str, str], bytes]]:
    from tests.integration.test_rest_tools import CASES

    out = []
    for case in CASES:
        headers = {"mcp_session_id": "@valid"} | {
            k.lower().replace("-", "_"): v for k, v in case.client_headers.items()
        }
        out.append((headers, message("tools/call", {"name": case.id, "arguments": case.arguments}, id=11)))
    return out


def encode_headers(headers: dict[str, str], default_path: str) -> bytes:
    lines = []
    path = headers.get("_path", default_path)
    lines.append(f":path: {path}")
    lines.append(f":method: {headers.get('_method', 'POST')}")
    for k, v in headers.items():
        if not k.startswith("_"):
            lines.append(f"{k.replace('_', '-')}: {v}")
    return "\n".join(lines).encode()


def answers(rest_config: dict[str, Any]) -> list[bytes]:
    """A backend answer for each tool: its test case's arguments, a JSON, a plain and an error answer."""
    from tests.integration.test_rest_tools import CASES

    by_name = {c.id: c for c in CASES}
    out = []
    for i, tool in enumerate(rest_config["tools"]):
        case = by_name.get(tool["name"])
        args = json.dumps(case.arguments if case else {}).encode()
        has_template = bool(tool["response"]["body"] or tool["response"]["error_body"])
        bodies = [b'{"name":"Rex","tag":"dog","id":7,"v":[1,2,{"a":null}],"error":"boom"}']
        if has_template or i % 4 == 0:
            bodies += [b"plain text", b'{"v":1e999,"n":-0.0,"s":"\\u00e9\\ud83d\\ude00"}']
        for j, body in enumerate(bodies):
            status = [200, 409, 500][j % 3]
            ctype = b"content-type: application/json\nx-request-id: r-1"
            out.append(f"{i} {status}".encode() + b"\0" + args + b"\0" + ctype + b"\0" + body)
    out.append(b"0 200\0{}\0content-type: image/png\0\x89PNG\r\n\x1a\n")
    out.append(b"0 200 modern\0{}\0content-type: audio/wav; x=1\0RIFF")
    return out


def answer(result: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "result": result}, separators=(",", ":")).encode()


def proxy_seeds() -> list[bytes]:
    init = message(
        "initialize",
        {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}},
    )
    server = {"name": "u", "version": "1"}
    ok = answer({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": server})
    tools = answer({"tools": [{"name": "forecast", "inputSchema": {"type": "object"}}, {"name": "hidden"}]})
    called = answer({"content": [{"type": "text", "text": "sunny"}], "isError": False})
    sse = (
        b"event: message\ndata: "
        + message("notifications/progress", {}, id=None)
        + b"\n\nid: 1\ndata: "
        + called
        + b"\n\n"
    )
    json_h = b":status: 200\ncontent-type: application/json\nmcp-session-id: up-1"
    sse_h = b":status: 200\ncontent-type: text/event-stream"
    modern = {"mcp_protocol_version": "2026-07-28"}
    sessioned = {"mcp_session_id": "@valid"}
    cases = [
        ({}, init, json_h, ok),
        (sessioned, message("tools/list"), json_h, tools),
        (sessioned, message("tools/call", {"name": "forecast", "arguments": {"city": "Oslo"}}), sse_h, sse),
        (sessioned, message("tools/call", {"name": "hidden", "arguments": {}}), json_h, called),
        (sessioned, message("notifications/initialized", id=None), b":status: 202", b""),
        (
            modern | {"mcp_method": "tools/call", "mcp_name": "forecast"},
            message("tools/call", {"name": "forecast", "arguments": {}}, meta=True),
            json_h,
            ok,
        ),
        (modern | {"mcp_method": "server/discover"}, message("server/discover", {}, meta=True), json_h, ok),
        ({"_method": "DELETE", "mcp_session_id": "@valid"}, b"", b":status: 204", b""),
        (
            sessioned,
            message("tools/call", {"name": "forecast"}),
            b":status: 500\ncontent-type: text/plain",
            b"oops",
        ),
        (
            sessioned,
            message("ping"),
            b":status: 200\ncontent-type: application/json",
            b'{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"x"}}',
        ),
    ]
    return [encode_headers(h, MCP_PATH) + b"\0" + body + b"\0" + uh + b"\0" + ub for h, body, uh, ub in cases]


def session_seeds() -> list[bytes]:
    # Shapes of tokens (base64url payload, '.', base64url MAC): valid-looking, truncated, other keys.
    payload = (
        bytes([1, 2])
        + b"k2"
        + (1_750_000_000_000).to_bytes(8, "big")
        + bytes([10])
        + b"2025-06-18"
        + bytes(16)
    )
    b64 = base64.urlsafe_b64encode(payload).rstrip(b"=")
    mac = base64.urlsafe_b64encode(hashlib.sha256(payload).digest()[:16]).rstrip(b"=")
    slot = bytes(16) + (1_750_000_001_000).to_bytes(8, "little")
    return [
        b64 + b"." + mac,
        b64 + b"." + mac + b"\0" + slot * 3,
        b"." + mac,
        b"not a token",
        b"2025-06-18h0:up-1\0" + slot,
    ]


def config_seeds(texts: dict[str, str]) -> list[bytes]:
    minimal = b'{"server":{"name":"s","version":"1"},"base_path":"/m","upstream":{"cluster":"c"},"tools":[]}'
    return [t.encode() for t in texts.values()] + [
        minimal,
        b'{"schema":999,"server":{"name":"s","version":"1"},"base_path":"/m"}',
        b'{"server":{"name":"s","version":"1"},"base_path":"/m","upstream":{"cluster":"c"},'
        b'"tools":[{"name":"a","request":{"path":[],"headers":[{"name":"Host","value":[]}]}}]}',
    ]


def write(dir: Path, items: list[bytes]) -> None:
    dir.mkdir(parents=True, exist_ok=True)
    for item in items:
        (dir / hashlib.sha1(item).hexdigest()).write_bytes(item)


def seeds() -> None:
    texts = configs()
    for name, text in texts.items():
        (HERE / "configs" / f"{name}.json").write_text(text)
    rest = json.loads(texts["rest"])
    corpus = HERE / "corpus"
    for sub in corpus.glob("*/*"):
        sub.unlink()
    requests = [encode_headers(h, REST_PATH) + b"\0" + body for h, body in spec_messages() + rest_calls()]
    write(corpus / "request", requests)
    write(corpus / "answer", answers(rest))
    write(corpus / "proxy", proxy_seeds())
    write(corpus / "session", session_seeds())
    write(corpus / "config", config_seeds(texts))


# ---------------------------------------------------------------------- extremes

DEPTHS = [65, 1001, 6_000, 10_000, 30_000]
NUMBERS = [
    "0",
    "-0",
    "1e999999",
    "-1e999999",
    "1e-999999",
    "4.9e-324",
    "1.7976931348623157e308",
    "123456789012345678901234567890123456789012345678901234567890",
    "-9223372036854775809",
    "18446744073709551616",
    "0.0000000000000000000000000000001",
    "1E+2",
    "1.0",
    "00",
    "-",
    "1e",
    ".5",
]
CONTROL = "".join(chr(c) for c in range(0x20)) + "\x7f"
INVALID_UTF8 = [
    b"\xff",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82",
    b"\x80",
    b"\xf0\x9f\x98",
]


def nested(depth: int, open: str = "[", close: str = "]", inner: str = "1") -> str:
    return open * depth + inner + close * depth


def deep_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def extremes() -> dict[str, list[bytes]]:
    session = encode_headers({"mcp_session_id": "@valid"}, REST_PATH)
    out: dict[str, list[bytes]] = {t: [] for t in ("request", "answer", "proxy", "session", "config")}
    bodies: list[bytes] = []
    for d in DEPTHS:
        bodies.append(
            message("tools/call", {"name": "x", "arguments": {}})[:-2] + b',"t":' + nested(d).encode() + b"}}"
        )
        bodies.append(b'{"jsonrpc":"2.0","id":1,"method":"ping","params":' + deep_objects(d).encode() + b"}")
        bodies.append(nested(d).encode())
        bodies.append(("[" * d).encode())
        bodies.append(('{"a":' * d).encode())
    for n in NUMBERS:
        bodies.append(
            f'{{"jsonrpc":"2.0","id":{n},"method":"tools/call","params":{{"name":"number-canonical","arguments":{{"n":{n},"x":{n}}}}}}}'.encode()
        )
    every_control = json.dumps(CONTROL)
    bodies.append(f'{{"jsonrpc":"2.0","id":{every_control},"method":{every_control}}}'.encode())
    bodies.append(CONTROL.encode())
    for bad in INVALID_UTF8:
        bodies.append(b'{"jsonrpc":"2.0","id":"' + bad + b'","method":"ping"}')
        bodies.append(
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"'
            + bad
            + b'","arguments":{"q":"'
            + bad
            + b'"}}}'
        )
    out["request"] += [session + b"\0" + b for b in bodies]
    # Every header the gateway reads, with hostile values.
    hostile = [
        "",
        " ",
        CONTROL,
        "\xff\xfe",
        "a" * 5000,
        "%00%0d%0a",
        "2026-07-28",
        "=?base64?" + "A" * 100 + "?=",
    ]
    for name in GATEWAY_HEADERS:
        for value in hostile:
            h = f":path: {REST_PATH}\n:method: POST\n" if not name.startswith(":") else ""
            line = (h + f"{name}: ").encode() + value.encode("utf-8", "surrogateescape")
            out["request"].append(line + b"\0" + message("ping"))
            out["proxy"].append(
                line.replace(REST_PATH.encode(), MCP_PATH.encode())
                + b"\0"
                + message("ping")
                + b"\0:status: 200\0{}"
            )
    for d in DEPTHS:
        out["answer"].append(
            b"0 200\0{}\0content-type: application/json\0" + ('{"v":' + nested(d) + "}").encode()
        )
        out["proxy"].append(
            encode_headers({"mcp_session_id": "@valid"}, MCP_PATH)
            + b"\0"
            + message("ping")
            + b"\0:status: 200\ncontent-type: application/json\0"
            + ('{"jsonrpc":"2.0","id":1,"result":' + nested(d) + "}").encode()
        )
        out["proxy"].append(
            encode_headers({"mcp_session_id": "@valid"}, MCP_PATH)
            + b"\0"
            + message("ping")
            + b"\0:status: 200\ncontent-type: text/event-stream\0data: "
            + nested(d).encode()
            + b"\n\n"
        )
        out["config"].append(
            b'{"server":{"name":"s","version":"1"},"base_path":"/m","tools":' + nested(d).encode() + b"}"
        )
    for n in NUMBERS:
        out["answer"].append(f'0 200\0{{}}\0content-type: application/json\0{{"v":{n}}}'.encode())
        out["config"].append(
            f'{{"server":{{"name":"s","version":"1"}},"base_path":"/m","limits":{{"max_json_depth":{n},"max_request_bytes":{n}}}}}'.encode()
        )
    out["answer"].append(b"0 200\0{}\0content-type: application/json\0" + json.dumps({"v": CONTROL}).encode())
    for bad in INVALID_UTF8:
        out["answer"].append(b"0 500\0{}\0content-type: text/plain\0" + bad * 3)
        out["session"].append(bad * 40 + b"." + b"A" * 22)
    out["session"] += [
        b"A" * 4097 + b"." + b"A" * 22,
        b"." * 3,
        CONTROL.encode() + b".AAAAAAAAAAAAAAAAAAAAAA",
    ]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--extremes", type=Path, help="write the extreme inputs into DIR/<target>/")
    args = p.parse_args()
    if args.extremes:
        for target, items in extremes().items():
            write(args.extremes / target, items)
    else:
        seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
