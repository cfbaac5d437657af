"""Configuration texts the data-plane benchmark writes: the backend, the static Envoys, the registry.

Every scenario calls the same tool, `getPet(id=1)`, which is `GET /v1/pets/1` on one nginx
backend answering a fixed 33-byte JSON object, so the scenarios differ only in what sits in
front of the backend.
"""

from __future__ import annotations

import json
from pathlib import Path

_T = "type.googleapis.com/envoy.extensions.filters."

PET_JSON = '{"id":1,"name":"Rex","tag":"dog"}'
TOOL_NAME = "getPet"
TOOL_DESCRIPTION = "Get one pet by id."
INPUT_SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "integer", "description": "The pet's id."}},
    "required": ["id"],
}
ACCEPT = "application/json, text/event-stream"

CALL_BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": TOOL_NAME, "arguments": {"id": 1}},
    },
    separators=(",", ":"),
)
LIST_BODY = '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
INIT_BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "wrk", "version": "1"},
        },
    },
    separators=(",", ":"),
)


def nginx_conf(workdir: Path, port: int) -> str:
    """One nginx worker answering the pet from memory (no disk, no access log)."""
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/nginx-body;
  proxy_temp_path {workdir}/nginx-proxy;
  fastcgi_temp_path {workdir}/nginx-fastcgi;
  uwsgi_temp_path {workdir}/nginx-uwsgi;
  scgi_temp_path {workdir}/nginx-scgi;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location = /v1/pets/1 {{
      default_type application/json;
      return 200 '{PET_JSON}';
    }}
    location / {{ return 404; }}
  }}
}}
"""


def _backend_cluster(backend_port: int) -> dict[str, object]:
    return {
        "name": "backend",
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": "backend",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": backend_port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }


def native_bridge_filter() -> dict[str, object]:
    """Envoy 1.40's own REST bridge with the same tool (config shape verified in DESIGN.md)."""
    return {
        "name": "envoy.filters.http.mcp_json_rest_bridge",
        "typed_config": {
            "@type": _T + "http.mcp_json_rest_bridge.v3.McpJsonRestBridge",
            "tool_config": {
                "tool_list_local": {},
                "tools": [
                    {
                        "name": TOOL_NAME,
                        "http_rule": {"get": "/v1/pets/{id}"},
                        "tool_list_config": {
                            "description": TOOL_DESCRIPTION,
                            "input_schema": json.dumps(INPUT_SCHEMA, separators=(",", ":")),
                        },
                    }
                ],
            },
        },
    }


def wasm_floor_filter(wasm: Path) -> dict[str, object]:
    """`bench/wasm_floor.zig` inline, with the runtime and options the mcpgw filter uses."""
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": _T + "http.wasm.v3.Wasm",
            "config": {
                "name": "wasm-floor",
                "vm_config": {
                    "vm_id": "wasm-floor",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(wasm)}},
                },
                # Pause in on_request_headers must hold the stream until the body arrives.
                "allow_on_headers_stop_iteration": True,
            },
        },
    }


def native_module_filter(name: str) -> dict[str, object]:
    """Envoy's dynamic-modules filter running `lib<name>.so`, which Envoy looks up in
    $ENVOY_DYNAMIC_MODULES_SEARCH_PATH (native code in Envoy's process, no VM)."""
    return {
        "name": "envoy.filters.http.dynamic_modules",
        "typed_config": {
            "@type": _T + "http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": name},
            "filter_name": name,
        },
    }


def static_envoy(
    listen_port: int,
    admin_port: int,
    backend_port: int,
    *,
    native: bool,
    wasm: Path | None = None,
    module: str | None = None,
) -> str:
    """A static Envoy in front of the backend: plain proxy, with the native MCP bridge, with
    the Proxy-Wasm module `wasm` (the floor filter) inline, or with the dynamic module `module`.

    JSON is valid YAML, so the bootstrap is written as JSON.
    """
    http_filters: list[dict[str, object]] = [native_bridge_filter()] if native else []
    if wasm is not None:
        http_filters.append(wasm_floor_filter(wasm))
    if module is not None:
        http_filters.append(native_module_filter(module))
    http_filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }
    )
    manager = {
        "@type": _T + "network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "codec_type": "AUTO",
        "normalize_path": True,
        "merge_slashes": True,
        "route_config": {
            "name": "bench",
            "virtual_hosts": [
                {
                    "name": "bench",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}],
                }
            ],
        },
        "http_filters": http_filters,
    }
    bootstrap = {
        "node": {
            "id": "bench-native"
            if native
            else "bench-wasm-floor"
            if wasm
            else "bench-native-module"
            if module
            else "bench-proxy",
            "cluster": "bench",
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "bench",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [_backend_cluster(backend_port)],
        },
    }
    return json.dumps(bootstrap, indent=1)


def tool_yaml(name: str = TOOL_NAME, extra: str = "") -> str:
    return f"""  - name: {name}
    description: {TOOL_DESCRIPTION}{extra}
    args:
      - {{name: id, type: integer, description: "The pet's id.", required: true, position: path}}
    requestTemplate: {{url: "/v1/pets/{{{{.args.id}}}}", method: GET}}
"""


def server_yaml(namespace: str, name: str, backend_port: int, tools: int = 1, extra: str = "") -> str:
    """One registry document. With `tools` > 1 the first is `getPet`, the rest `getPet2..N`.

    `extra` is appended to every description (an edit that changes the filter configuration).
    """
    names = [TOOL_NAME] + [f"{TOOL_NAME}{i}" for i in range(2, tools + 1)]
    return f"""kind: McpServer
namespace: {namespace}
name: {name}
description: Bench server {name}
version: 1.0.0
backend:
  scheme: http
  endpoints: ["127.0.0.1:{backend_port}"]
  timeoutMs: 5000
tools:
""" + "".join(tool_yaml(n, extra) for n in names)


WRK_LUA = """-- POST a JSON-RPC body read from the environment; report latency percentiles as JSON.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
local path = os.getenv("BENCH_PATH")
if path ~= nil and path ~= "" then wrk.path = path end
-- Extra request headers, one "name: value" per line (e.g. the MCP session of the mcpgw runs).
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name ~= nil then wrk.headers[name] = value end
end
local method = os.getenv("BENCH_METHOD")
if method ~= nil and method ~= "" then
  wrk.method = method
  if method == "GET" then wrk.body = nil; wrk.headers["Content-Type"] = nil end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"bytes\\":%d," ..
    "\\"p50_us\\":%d,\\"p90_us\\":%d,\\"p99_us\\":%d,\\"p999_us\\":%d,\\"max_us\\":%d,\\"mean_us\\":%.1f," ..
    "\\"err_connect\\":%d,\\"err_read\\":%d,\\"err_write\\":%d,\\"err_status\\":%d,\\"err_timeout\\":%d}\\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""
