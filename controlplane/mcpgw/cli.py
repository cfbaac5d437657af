"""`mcpgw` command line.

Exit codes: 0 success, 1 runtime failure, 2 usage error, 3 invalid registry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcpgw import cliopts, log, tracing
from mcpgw.bootstrap import (
    DEFAULT_STATS_PORT,
    BootstrapInvalid,
    BootstrapOptions,
    XdsClientTls,
    parse_address,
    render,
    write_sds,
)
from mcpgw.limits import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEAP_BYTES,
    ENVOY_FD_RESERVE,
    MIN_MAX_HEAP_BYTES,
    ListenerLimits,
    connection_cap_warning,
    envoy_connection_cap,
    parse_size,
)
from mcpgw.listenertls import ListenerTls
from mcpgw.registry.filesource import load_directory, load_file
from mcpgw.registry.validate import Invalid
from mcpgw.tlsreload import TlsFiles
from mcpgw.xds.tls import XdsConfigError, XdsTls

if TYPE_CHECKING:
    from mcpgw.broker import BrokerSettings
    from mcpgw.registry.secrets import CredentialPolicy

EXIT_FAILURE, EXIT_USAGE, EXIT_INVALID = 1, 2, 3


def _version_text() -> str:
    """`--version`: mcpgw's version and its plugin's (read from the plugin folder only when asked)."""
    from mcpgw.versions import version_text
    from pluginserver.server import DEFAULT_ROOT

    return version_text(DEFAULT_ROOT)


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _xds_tls_options(parser: argparse.ArgumentParser, server: bool) -> None:
    """`--xds-tls-cert/-key/-ca`: the control plane's (serve) or an Envoy's (bootstrap) side of xDS mTLS."""
    whose = "the control plane's" if server else "this Envoy's client"
    peer = "Envoys' client certificates" if server else "the control plane's certificate"
    parser.add_argument(
        "--xds-tls-cert", type=Path, metavar="FILE", help=f"{whose} certificate for xDS (PEM)"
    )
    parser.add_argument("--xds-tls-key", type=Path, metavar="FILE", help=f"{whose} private key for xDS (PEM)")
    parser.add_argument("--xds-tls-ca", type=Path, metavar="FILE", help=f"CA that signs {peer} (PEM)")


def _xds_tls(args: argparse.Namespace) -> XdsTls | None:
    """The xDS TLS files, all three or none; raises XdsConfigError otherwise."""
    files = (args.xds_tls_cert, args.xds_tls_key, args.xds_tls_ca)
    if not any(files):
        return None
    if not all(files):
        raise XdsConfigError("--xds-tls-cert, --xds-tls-key and --xds-tls-ca go together (mutual TLS)")
    return XdsTls(*(path.absolute() for path in files))


def _bootstrap_tls(args: argparse.Namespace) -> XdsClientTls | None:
    """An Envoy's xDS client TLS from the flags; the SDS files it names are written here."""
    tls = _xds_tls(args)
    if tls is None:
        if args.xds_tls_server_name or args.sds_dir:
            raise XdsConfigError("--xds-tls-server-name and --sds-dir need --xds-tls-cert/-key/-ca")
        return None
    tls.check()
    client = XdsClientTls(
        tls.cert,
        tls.key,
        tls.ca,
        (args.sds_dir or tls.cert.parent).absolute(),
        tuple(args.xds_tls_server_name),
    )
    write_sds(client)
    return client


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _redis_url(text: str) -> str:
    from mcpgw.redisurl import RedisUrlError, parse

    try:
        parse(text)
    except RedisUrlError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _registry(text: str) -> Path | str:
    """A registry directory, or a `redis://…` / `redis+sentinel://…` URL shared by replicas."""
    from mcpgw.registry import is_store_url

    return _redis_url(text) if is_store_url(text) else Path(text)


def _whole_seconds(text: str) -> int:
    """Seconds as a positive integer (session TTLs are whole seconds in the filter's tokens)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _namespace_tokens_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin-namespace-tokens",
        metavar="FILE",
        type=Path,
        default=None,
        help="YAML mapping each namespace to SHA-256 digests of admin tokens that may use only it",
    )


def _session_options(parser: argparse.ArgumentParser, ttl: int) -> None:
    from mcpgw.sessions.keys import DEFAULT_MAX_ENDED

    parser.add_argument(
        "--session-keys",
        type=Path,
        default=None,
        metavar="FILE",
        help="keys file that signs MCP session ids (default: in the Redis registry, or "
        "<registry>/../.mcpgw/<registry name>-session-keys.json; $MCPGW_SESSION_KEY pins one key)",
    )
    parser.add_argument(
        "--session-ttl",
        type=_whole_seconds,
        default=ttl,
        metavar="SECONDS",
        help="how long an MCP session id stays valid after it was issued (default: %(default)s)",
    )
    parser.add_argument(
        "--session-max-ended",
        type=_positive,
        default=DEFAULT_MAX_ENDED,
        metavar="N",
        help="ended (DELETEd) sessions each Envoy refuses until they expire; beyond it the oldest "
        "are forgotten (default: %(default)s)",
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _heap_size(text: str) -> int:
    try:
        value = parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    if value < MIN_MAX_HEAP_BYTES:
        raise argparse.ArgumentTypeError(f"expected at least {MIN_MAX_HEAP_BYTES >> 20}Mi, got {text!r}")
    return value


def _max_heap_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-heap",
        type=_heap_size,
        default=DEFAULT_MAX_HEAP_BYTES,
        metavar="SIZE",
        help="Envoy's heap limit (512Mi, 2Gi…): new requests get 503 at 98%% of it instead of Envoy "
        "being killed; about 2/3 of its container's memory limit "
        f"(default: {DEFAULT_MAX_HEAP_BYTES >> 20}Mi)",
    )


def _limit_options(parser: argparse.ArgumentParser) -> None:
    """The listener's timeouts and limits (`mcpgw.limits.ListenerLimits`, docs/security.md)."""
    defaults = ListenerLimits()
    for flag, name, kind, what in (
        (
            "--request-headers-timeout",
            "request_headers_timeout_s",
            _seconds,
            "for a client's request headers",
        ),
        ("--request-timeout", "request_timeout_s", _seconds, "for a whole request, tool calls included"),
        ("--stream-idle-timeout", "stream_idle_timeout_s", _seconds, "a stream may stay silent"),
        ("--idle-timeout", "idle_timeout_s", _seconds, "a client connection may stay idle"),
        (
            "--max-streams-per-connection",
            "max_concurrent_streams",
            _positive,
            "HTTP/2 streams per connection",
        ),
        ("--backend-max-requests", "backend_max_requests", _positive, "calls in flight per backend cluster"),
    ):
        unit = "SECONDS" if kind is _seconds else "N"
        parser.add_argument(
            flag,
            dest=f"limit_{name}",
            type=kind,
            default=getattr(defaults, name),
            metavar=unit,
            help=f"{what} (default: %(default)s)",
        )


def _stream_limit_options(parser: argparse.ArgumentParser) -> None:
    """The session broker's limits on open HTTP+SSE streams (0: none)."""
    from mcpgw.broker import BrokerSettings
    from mcpgw.broker.bridge import BridgeSettings

    # Not from the environment: a bad $MCPGW_BRIDGE_* is reported after parsing, in one line.
    defaults = BrokerSettings(bridge=BridgeSettings())
    parser.add_argument(
        "--max-sse-streams",
        type=int,
        default=defaults.max_streams,
        metavar="N",
        help="open HTTP+SSE streams this broker holds; more get 429 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-sse-streams-per-client",
        type=int,
        default=defaults.max_streams_per_client,
        metavar="N",
        help="open HTTP+SSE streams per client address; more get 429 (default: %(default)s)",
    )


def _broker_settings(args: argparse.Namespace, **fields: Any) -> BrokerSettings:
    from mcpgw.broker import BrokerSettings

    return BrokerSettings(
        max_streams=args.max_sse_streams, max_streams_per_client=args.max_sse_streams_per_client, **fields
    )


def _limits(args: argparse.Namespace) -> ListenerLimits:
    fields = {
        name.removeprefix("limit_"): value for name, value in vars(args).items() if name.startswith("limit_")
    }
    return ListenerLimits(**fields)


def _tls_options(parser: argparse.ArgumentParser, local: bool) -> None:
    """TLS on the MCP listener (files on the Envoy node) and on the admin API (files here)."""
    where = "on this machine" if local else "absolute path on every Envoy node"
    group = parser.add_argument_group(
        "TLS on the MCP listener and the admin API",
        "PEM files, re-read when they are replaced (by a rename, as Kubernetes and cert-manager do) "
        "without a restart; docs/security.md",
    )
    group.add_argument(
        "--listener-tls-cert", metavar="FILE", help=f"MCP listener certificate chain ({where}); HTTPS with h2"
    )
    group.add_argument("--listener-tls-key", metavar="FILE", help=f"its private key ({where})")
    group.add_argument(
        "--listener-tls-ca",
        metavar="FILE",
        help=f"CA of client certificates ({where}): every MCP client must present one it signed",
    )
    group.add_argument("--admin-tls-cert", type=Path, metavar="FILE", help="admin API certificate chain")
    group.add_argument("--admin-tls-key", type=Path, metavar="FILE", help="its private key")
    group.add_argument(
        "--admin-tls-ca",
        type=Path,
        metavar="FILE",
        help="CA of client certificates: every admin API client must present one it signed",
    )


class _TlsUsage(ValueError):
    """Inconsistent TLS flags: a usage error (exit 2)."""


def _listener_tls(args: argparse.Namespace, local: bool) -> ListenerTls | None:
    cert, key, ca = args.listener_tls_cert, args.listener_tls_key, args.listener_tls_ca
    if cert is None and key is None:
        if ca is not None:
            raise _TlsUsage("--listener-tls-ca needs --listener-tls-cert and --listener-tls-key")
        return None
    if cert is None or key is None:
        raise _TlsUsage("--listener-tls-cert and --listener-tls-key go together")
    if local:
        # `mcpgw up`: Envoy runs here, in another working directory.
        cert, key = str(Path(cert).resolve()), str(Path(key).resolve())
        ca = None if ca is None else str(Path(ca).resolve())
    tls = ListenerTls(cert, key, ca)
    problems = tls.problems()
    if problems:
        raise _TlsUsage(problems[0])
    return tls


def _admin_tls(args: argparse.Namespace) -> TlsFiles | None:
    cert, key, ca = args.admin_tls_cert, args.admin_tls_key, args.admin_tls_ca
    if cert is None and key is None:
        if ca is not None:
            raise _TlsUsage("--admin-tls-ca needs --admin-tls-cert and --admin-tls-key")
        return None
    if cert is None or key is None:
        raise _TlsUsage("--admin-tls-cert and --admin-tls-key go together")
    return TlsFiles(cert, key, ca)


CREDENTIAL_DIRS_ENV, CREDENTIAL_ENV_ENV = "MCPGW_CREDENTIAL_DIRS", "MCPGW_CREDENTIAL_ENV"


def _plugin_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plugin-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="plugin folder to serve (<name>/<version>/plugin.wasm; default: the plugins mcpgw ships with)",
    )


def _plugin_dir(args: argparse.Namespace) -> Path:
    from pluginserver.server import DEFAULT_ROOT

    return args.plugin_dir or DEFAULT_ROOT


def _credential_options(parser: argparse.ArgumentParser) -> None:
    from mcpgw.registry.secrets import DEFAULT_CREDENTIAL_DIRS, DEFAULT_CREDENTIAL_ENV, MAX_CREDENTIAL_BYTES

    dirs = os.pathsep.join(str(d) for d in DEFAULT_CREDENTIAL_DIRS)
    env = ",".join(DEFAULT_CREDENTIAL_ENV)
    group = parser.add_argument_group(
        "backend credentials",
        "which {file: PATH} and {env: NAME} credentials registry documents may name: regular files "
        f"of at most {MAX_CREDENTIAL_BYTES // 1024} KiB, never mcpgw's own secrets (session keys, admin "
        "token, MCPGW_* variables other than MCPGW_CRED_*); anything else is refused as "
        "'credential unavailable', with the reason in the log",
    )
    group.add_argument(
        "--credential-dir",
        dest="credential_dirs",
        type=Path,
        action="append",
        metavar="DIR",
        help=f"a directory credential files may be in; repeatable (default: ${CREDENTIAL_DIRS_ENV} "
        f"separated by {os.pathsep!r}, else {dirs})",
    )
    group.add_argument(
        "--credential-env",
        dest="credential_env",
        action="append",
        metavar="PATTERN",
        help=f"a shell pattern credential variables must match; repeatable (default: ${CREDENTIAL_ENV_ENV} "
        f"separated by ',', else {env})",
    )
    group.add_argument(
        "--any-credential",
        action="store_true",
        help="no allow-list: any regular file, any variable (mcpgw's own secrets stay refused)",
    )


def _backend_tls_options(parser: argparse.ArgumentParser) -> None:
    from mcpgw.registry.tls import default_system_ca_file

    parser.add_argument(
        "--backend-tls-ca",
        metavar="FILE",
        default=default_system_ca_file(),
        help="PEM bundle of the system CAs on the Envoy nodes: https backends without their own "
        "backend.tls.ca are verified against it (default: %(default)s)",
    )


def _access_log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--access-log",
        metavar="PATH",
        default="/dev/stdout",
        help="where each Envoy writes the MCP listener's JSON access log, one line per request "
        "(a path on the Envoy nodes; 'off' for none; default: %(default)s, Envoy's standard output)",
    )


def _with_reason(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` for argparse: its ValueError's reason is the message, not "invalid value"."""

    def parsed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parsed


def _trace_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--otlp-endpoint",
        metavar="HOST:PORT",
        type=_with_reason(tracing.parse_endpoint),
        default=None,
        help="an OpenTelemetry collector's OTLP gRPC address: each Envoy traces the MCP listener's "
        "requests and sends the spans there (default: no traces)",
    )
    parser.add_argument(
        "--trace-sampling",
        metavar="PERCENT",
        type=_with_reason(tracing.parse_sampling),
        default=tracing.DEFAULT_SAMPLING,
        help="percent of requests without a sampled traceparent that start a trace; a client's "
        "sampled traceparent is always continued (default: %(default)s)",
    )


def _tracing(args: argparse.Namespace) -> tracing.TraceSettings | None:
    if args.otlp_endpoint is None:
        return None
    host, port = args.otlp_endpoint
    return tracing.TraceSettings(host, port, args.trace_sampling)


def _access_log(args: argparse.Namespace) -> str | None:
    path: str = args.access_log
    return None if path == "off" else path


def _credential_policy(args: argparse.Namespace) -> CredentialPolicy:
    """The allow-list of `--credential-dir` / `--credential-env`, else their variables, else the defaults."""
    from mcpgw.registry.secrets import CredentialPolicy

    if args.any_credential:
        return CredentialPolicy()
    dirs: list[Path] | None = args.credential_dirs
    if dirs is None and os.environ.get(CREDENTIAL_DIRS_ENV, "").strip():
        dirs = [Path(d) for d in os.environ[CREDENTIAL_DIRS_ENV].split(os.pathsep) if d.strip()]
    env: list[str] | None = args.credential_env
    if env is None and os.environ.get(CREDENTIAL_ENV_ENV, "").strip():
        env = [p.strip() for p in os.environ[CREDENTIAL_ENV_ENV].split(",") if p.strip()]
    return CredentialPolicy.allow_list(dirs, env)


def _parser() -> argparse.ArgumentParser:
    from mcpgw.stack import StackOptions

    defaults = StackOptions()
    parser = argparse.ArgumentParser(prog="mcpgw", description="A private MCP gateway on Envoy.")
    cliopts.add_global_options(parser, _version_text)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up", help="run the whole gateway locally: demo backend, plugin server, control plane, Envoy"
    )
    up.add_argument(
        "-f",
        "--registry",
        type=_registry,
        default=None,
        help="registry directory or redis:// URL (default: a fresh copy of the bundled demo registry)",
    )
    up.add_argument(
        "--listen-port",
        type=int,
        default=defaults.listen_port,
        help="MCP listener port (default: %(default)s)",
    )
    up.add_argument("--xds-port", type=int, default=defaults.xds_port, help="default: %(default)s")
    up.add_argument(
        "--status-port",
        dest="status_port_old",
        type=int,
        metavar="N",
        action=cliopts.Deprecated,
        use="--admin HOST:PORT",
        help="deprecated: use --admin HOST:PORT",
    )
    up.add_argument("--plugin-port", type=int, default=defaults.plugin_port, help="default: %(default)s")
    _plugin_dir_option(up)
    up.add_argument(
        "--envoy-admin-port", type=int, default=defaults.envoy_admin_port, help="default: %(default)s"
    )
    up.add_argument(
        "--envoy-stats-port",
        type=int,
        default=defaults.envoy_stats_port,
        help="Envoy stats listener (GET /stats/prometheus and /ready only) (default: %(default)s)",
    )
    up.add_argument(
        "--demo-backend-port",
        type=int,
        default=defaults.demo_backend_port,
        help="demo REST backend port; 0 disables it (default: %(default)s)",
    )
    up.add_argument("--xds-delta", action="store_true", help="run Envoy with Delta (incremental) xDS")
    up.add_argument("--envoy-log-level", default=defaults.envoy_log_level, help="default: %(default)s")
    up.add_argument(
        "--admin",
        type=_address,
        default=(defaults.host, defaults.status_port),
        metavar="HOST:PORT",
        help=f"admin API address (default: {defaults.host}:{defaults.status_port}); "
        "non-loopback needs a token",
    )
    up.add_argument(
        "--admin-host",
        dest="admin_host_old",
        metavar="HOST",
        action=cliopts.Deprecated,
        use="--admin HOST:PORT",
        help="deprecated: use --admin HOST:PORT",
    )
    up.add_argument(
        "--admin-token-file",
        type=Path,
        default=None,
        help="file holding the admin API bearer token (default: $MCPGW_ADMIN_TOKEN; none: writes disabled)",
    )
    _namespace_tokens_option(up)
    up.add_argument(
        "--broker-port",
        type=int,
        default=defaults.broker_port,
        help="session broker (HTTP+SSE streams) port (default: %(default)s)",
    )
    up.add_argument(
        "--broker-redis",
        metavar="URL",
        type=_redis_url,
        default=None,
        help="session bus redis://… (default: the registry's Redis with -f redis://…, else in-process)",
    )
    _session_options(up, defaults.session_ttl_s)
    _credential_options(up)
    _backend_tls_options(up)
    _access_log_options(up)
    _trace_options(up)
    _limit_options(up)
    _stream_limit_options(up)
    _tls_options(up, local=True)
    _max_heap_option(up)

    serve = commands.add_parser(
        "serve", help="run one control-plane replica: xDS, admin API and plugin server (Envoys join it)"
    )
    serve.add_argument(
        "-f",
        "--registry",
        type=_registry,
        required=True,
        help="registry directory, or redis://HOST:PORT/DB (or redis+sentinel://HOST:PORT,…/SERVICE/DB) "
        "shared by replicas (password: $MCPGW_REDIS_PASSWORD)",
    )
    serve.add_argument(
        "--xds",
        type=_address,
        default=("127.0.0.1", defaults.xds_port),
        metavar="HOST:PORT",
        help=f"ADS gRPC address (default: 127.0.0.1:{defaults.xds_port}); non-loopback needs --xds-tls-*",
    )
    _xds_tls_options(serve, server=True)
    serve.add_argument(
        "--admin",
        type=_address,
        default=("127.0.0.1", defaults.status_port),
        metavar="HOST:PORT",
        help=f"admin API address (default: 127.0.0.1:{defaults.status_port}); non-loopback needs a token",
    )
    serve.add_argument(
        "--admin-token-file",
        type=Path,
        default=None,
        help="file holding the admin API bearer token (default: $MCPGW_ADMIN_TOKEN)",
    )
    _namespace_tokens_option(serve)
    serve.add_argument(
        "--metrics-token-file",
        type=Path,
        default=None,
        help="file holding a bearer token that admits only GET /metrics (for Prometheus)",
    )
    _session_options(serve, defaults.session_ttl_s)
    _credential_options(serve)
    _backend_tls_options(serve)
    _access_log_options(serve)
    _trace_options(serve)
    _limit_options(serve)
    _stream_limit_options(serve)
    _tls_options(serve, local=False)
    serve.add_argument(
        "--plugins",
        type=_address,
        default=("127.0.0.1", defaults.plugin_port),
        metavar="HOST:PORT",
        help=f"plugin server address, as Envoys reach it (default: 127.0.0.1:{defaults.plugin_port})",
    )
    _plugin_dir_option(serve)
    serve.add_argument(
        "--no-plugin-server",
        dest="plugin_server",
        action="store_false",
        help="do not serve plugins here: Envoys fetch them from --plugins, run by someone else",
    )
    serve.add_argument(
        "--plugin-delivery",
        choices=["auto", "file", "http"],
        default="auto",
        help="how Envoys get the plugin module: file (read from this machine's plugin directory: Envoys "
        "on this machine), http (fetched from --plugins), auto (file when --plugins is loopback; default)",
    )
    serve.add_argument(
        "--listen",
        type=_address,
        default=("127.0.0.1", defaults.listen_port),
        metavar="HOST:PORT",
        help=f"the MCP listener Envoys open (default: 127.0.0.1:{defaults.listen_port})",
    )
    serve.add_argument(
        "--broker",
        type=_address,
        default=("127.0.0.1", defaults.broker_port),
        metavar="HOST:PORT",
        help=f"session broker address for this replica's Envoy (default: 127.0.0.1:{defaults.broker_port})",
    )
    serve.add_argument(
        "--broker-redis",
        metavar="URL",
        type=_redis_url,
        default=None,
        help="session bus redis://… shared by replicas (default: the registry's Redis with -f redis://…, "
        "else in-process: HTTP+SSE sessions then work with one replica only)",
    )
    serve.add_argument(
        "--no-broker",
        dest="broker_enabled",
        action="store_false",
        help="do not run a session broker here (run `mcpgw broker` beside each Envoy instead)",
    )

    boot = commands.add_parser(
        "bootstrap", help="print an Envoy bootstrap that joins the control plane over ADS"
    )
    boot.add_argument("--node-id", required=True, help="this Envoy's node id, unique per Envoy")
    boot.add_argument("--node-cluster", default="mcpgw", help="default: %(default)s")
    boot.add_argument(
        "--xds",
        type=_address,
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="control-plane ADS address; repeat for several replicas",
    )
    boot.add_argument(
        "--envoy-admin",
        type=_address,
        default=("127.0.0.1", 9901),
        metavar="HOST:PORT",
        help="Envoy admin address, a loopback IP only (default: 127.0.0.1:9901)",
    )
    boot.add_argument(
        "--admin",
        dest="envoy_admin",
        type=_address,
        action=cliopts.Deprecated,
        use="--envoy-admin HOST:PORT (--admin is the mcpgw admin API everywhere)",
        metavar="HOST:PORT",
        help="deprecated: use --envoy-admin",
    )
    boot.add_argument(
        "--xds-delta",
        dest="delta",
        action="store_true",
        help="use Delta (incremental) xDS: api_type DELTA_GRPC",
    )
    boot.add_argument(
        "--delta",
        dest="delta",
        action=cliopts.Deprecated,
        nargs=0,
        const=True,
        use="--xds-delta",
        help="deprecated: use --xds-delta",
    )
    boot.add_argument(
        "--stats",
        type=_address,
        default=("127.0.0.1", DEFAULT_STATS_PORT),
        metavar="HOST:PORT",
        help="stats listener: only GET /stats/prometheus and /ready of the admin; 0.0.0.0:PORT for "
        f"a Prometheus elsewhere (default: 127.0.0.1:{DEFAULT_STATS_PORT})",
    )
    _xds_tls_options(boot, server=False)
    boot.add_argument(
        "--xds-tls-server-name",
        action="append",
        default=[],
        metavar="NAME",
        help="a name (DNS or IP) the control plane's certificate must carry; repeatable (default: --xds)",
    )
    boot.add_argument(
        "--sds-dir",
        type=Path,
        metavar="DIR",
        help="where to write the file-based SDS resources naming the certificate files, so Envoy "
        "reloads them on rotation (default: the directory of --xds-tls-cert)",
    )
    boot.add_argument(
        "--full-cluster-stats",
        action="store_true",
        help="keep all ~110 Envoy stats of each MCP backend cluster (default: a core set; ~30 KB per server)",
    )
    boot.add_argument(
        "--broker",
        type=_address,
        default=("127.0.0.1", defaults.broker_port),
        metavar="HOST:PORT",
        help=f"this Envoy's session broker (default: 127.0.0.1:{defaults.broker_port})",
    )
    boot.add_argument(
        "--max-connections",
        type=_positive,
        default=None,
        metavar="N",
        help="Envoy's cap on client connections; Envoy's file-descriptor limit must be at least "
        f"2N+{ENVOY_FD_RESERVE} (a quarter of the limit below {4 * ENVOY_FD_RESERVE}) (default: "
        f"{DEFAULT_MAX_CONNECTIONS}, lowered to fit this machine's hard RLIMIT_NOFILE)",
    )
    _max_heap_option(boot)

    broker = commands.add_parser(
        "broker", help="run a session broker: holds HTTP+SSE streams for the Envoy beside it"
    )
    broker.add_argument(
        "--broker",
        dest="listen",
        type=_address,
        default=("127.0.0.1", defaults.broker_port),
        metavar="HOST:PORT",
        help=f"address Envoy's mcpgw-broker cluster points at (default: 127.0.0.1:{defaults.broker_port})",
    )
    broker.add_argument(
        "--listen",
        dest="listen",
        type=_address,
        action=cliopts.Deprecated,
        use="--broker HOST:PORT (--listen is the MCP listener everywhere)",
        metavar="HOST:PORT",
        help="deprecated: use --broker",
    )
    broker.add_argument(
        "--broker-redis",
        dest="redis",
        metavar="URL",
        type=_redis_url,
        default=None,
        help="session bus redis://… shared by every replica's broker (password: $MCPGW_REDIS_PASSWORD); "
        "default: in-process, for a single replica",
    )
    broker.add_argument(
        "--redis",
        dest="redis",
        metavar="URL",
        type=_redis_url,
        action=cliopts.Deprecated,
        use="--broker-redis URL",
        help="deprecated: use --broker-redis",
    )
    broker.add_argument(
        "--keepalive",
        type=_seconds,
        default=defaults.broker_keepalive,
        metavar="SECONDS",
        help="keep-alive comment interval on idle streams (default: %(default)s)",
    )
    _stream_limit_options(broker)

    check = commands.add_parser(
        "validate", help="validate a registry directory, or one YAML file, and exit (3 when invalid)"
    )
    check.add_argument(
        "-f", "--registry", type=Path, required=True, help="the registry directory, or one YAML file"
    )

    demo = commands.add_parser("demo-backend", help="run only the demo pet-store REST backend")
    demo.add_argument("--port", type=int, default=defaults.demo_backend_port, help="default: %(default)s")

    imp = commands.add_parser("import", help="write registry YAML from OpenAPI, Higress or Nacos definitions")
    imp.add_argument("format", choices=["openapi", "higress", "nacos"], help="what the input is")
    imp.add_argument("-f", "--file", type=Path, required=True, help="the input, JSON or YAML")
    imp.add_argument("-o", "--output", default="-", help="registry YAML to write; '-' is stdout (default)")
    imp.add_argument("--namespace", default="default", help="default: %(default)s")
    imp.add_argument("--name", help="server name (default: derived from the input)")
    imp.add_argument("--backend", metavar="HOST:PORT", help="backend address, overriding the input's")
    imp.add_argument("--scheme", choices=["http", "https"], help="backend scheme, overriding the input's")
    from mcpgw.admin.commands import add_commands

    add_commands(commands)
    from mcpgw import certs

    certs.add_commands(commands)
    cliopts.accept_global_options_everywhere(parser, _version_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Environment values are checked before anything starts: one line each, exit 2.
    try:
        level = args.log_level or cliopts.log_level()
    except cliopts.EnvironmentProblem as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    token_file = getattr(args, "admin_token_file", None) or getattr(args, "token_file", None)
    unused = ["MCPGW_ADMIN_TOKEN"] if token_file else []
    if getattr(args, "admin_tls_ca", None):
        unused.append("MCPGW_ADMIN_TLS_CA")
    problems = cliopts.environment_problems(args.command, unused=unused)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return EXIT_USAGE
    log.configure(level)
    if args.command == "bootstrap":
        admin_host, admin_port = args.envoy_admin
        try:
            xds_tls = _bootstrap_tls(args)
        except (XdsConfigError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USAGE
        cap = args.max_connections or envoy_connection_cap()
        # Rendered for this machine's limit: the Envoy that runs it may have another (say so).
        warning = None if args.max_connections else connection_cap_warning(cap)
        if warning:
            print(warning, file=sys.stderr)
        try:
            text = render(
                BootstrapOptions(
                    xds_tls=xds_tls,
                    node_id=args.node_id,
                    node_cluster=args.node_cluster,
                    xds=tuple(args.xds),
                    admin_host=admin_host,
                    admin_port=admin_port,
                    delta=args.delta,
                    broker=args.broker,
                    full_cluster_stats=args.full_cluster_stats,
                    max_connections=cap,
                    stats=args.stats,
                    max_heap_bytes=args.max_heap,
                )
            )
        except BootstrapInvalid as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USAGE
        print(text, end="")
        return 0
    if args.command == "broker":
        return asyncio.run(_run_broker(args))
    if args.command == "validate":
        return _validate(args.registry)
    if args.command == "demo-backend":
        return asyncio.run(_run_demo(args.port))
    if args.command == "import":
        return _import(args)
    if args.command == "certs":
        from mcpgw import certs

        return certs.run(args)
    if args.command in ("apply", "get", "delete", "session-keys", "consumers"):
        from mcpgw.admin.commands import run

        return run(args)
    if args.command == "serve":
        return asyncio.run(_serve(args))
    with _demo_unless_given(args):
        return asyncio.run(_up(args))


def _print_problems(error: Invalid) -> None:
    for problem in error.problems:
        print(f"error: {problem}", file=sys.stderr)


def _validate(path: Path) -> int:
    """A registry directory, or one YAML file of server documents (as `apply -f FILE` sends it)."""
    try:
        snapshot = load_file(path) if path.is_file() else load_directory(path)
    except Invalid as error:
        _print_problems(error)
        return EXIT_INVALID
    for server in snapshot.servers:
        print(f"ok: {server.key} ({len(server.tools)} tools) from {server.source}")
        # Valid, so the exit status stays 0; what deserves a look goes to stderr beside errors.
        for warning in server.warnings:
            print(f"warning: {server.source}: {warning}", file=sys.stderr)
    return 0


def _import(args: argparse.Namespace) -> int:
    """Convert, validate every document with the registry's own rules, then write (or refuse)."""
    from mcpgw.importers import IMPORTERS, ImportFailed, ImportOptions
    from mcpgw.importers.io import UnreadableInput, dump_documents, load_input
    from mcpgw.registry.validate import parse_server

    options = ImportOptions(args.namespace, args.name, args.backend, args.scheme)
    try:
        result = IMPORTERS[args.format](load_input(args.file), options)
    except (UnreadableInput, ImportFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    problems = []
    for document in result.documents:
        try:
            parse_server(document, file=str(args.output))
        except Invalid as error:
            problems.extend(error.problems)
    if problems:
        _print_problems(Invalid(problems))
        return EXIT_INVALID
    text = dump_documents(result.documents, f"Generated by: mcpgw import {args.format} -f {args.file}")
    if args.output == "-":
        sys.stdout.write(text)
    else:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_FAILURE
        tools = sum(len(d.get("tools", [])) for d in result.documents)
        print(f"wrote {args.output}: {len(result.documents)} server(s), {tools} tools", file=sys.stderr)
    return 0


class _StopSignal:
    """SIGINT/SIGTERM handled from the moment this exists, not only once start-up is done.

    A supervisor (Kubernetes, systemd, a test) may stop the process while it is still starting
    (Envoy serving but not yet ACKed): the default handler would end it with status -15 and leave
    children behind; this lets start-up be abandoned and everything stopped, status 0.
    """

    def __init__(self) -> None:
        self.event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.event.set)

    async def wait(self) -> None:
        await self.event.wait()

    async def first(self, start: Awaitable[object]) -> bool:
        """Run ``start`` unless a signal comes first (then cancel it); True if it completed."""
        task = asyncio.ensure_future(start)
        signalled = asyncio.ensure_future(self.event.wait())
        await asyncio.wait({task, signalled}, return_when=asyncio.FIRST_COMPLETED)
        signalled.cancel()
        if task.done():
            task.result()
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False


async def _wait_for_signal() -> None:
    await _StopSignal().wait()


async def _run_demo(port: int) -> int:
    from mcpgw.demo.petstore import create_app
    from mcpgw.httpserve import serve

    served = await serve(create_app(), "127.0.0.1", port)
    print(f"demo backend on {served.url}", flush=True)
    await _wait_for_signal()
    await served.close()
    return 0


def _broker_redis(args: argparse.Namespace) -> str | None:
    """The session bus: as asked, else the registry's own Redis (replicas share both), else none."""
    from mcpgw.registry import is_store_url

    if args.broker_redis:
        return str(args.broker_redis)
    return str(args.registry) if is_store_url(args.registry) else None


async def _run_broker(args: argparse.Namespace) -> int:
    from mcpgw.broker import Broker

    host, port = args.listen
    broker = Broker(
        host, port, redis_url=args.redis, settings=_broker_settings(args, keepalive=args.keepalive)
    )
    try:
        await broker.start()
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"session broker on {broker.url}, bus {broker.bus.description}", flush=True)
    try:
        await _wait_for_signal()
    finally:
        await broker.stop()
    return 0


async def _serve(args: argparse.Namespace) -> int:
    from mcpgw.admin.auth import AdminConfigError
    from mcpgw.broker import Broker
    from mcpgw.controlplane import ControlPlane, ControlPlaneOptions
    from mcpgw.httpserve import ServedApp, serve
    from mcpgw.sessions.keys import KeysInvalid
    from mcpgw.sessions.store import KeyStoreUnavailable
    from mcpgw.xds.tls import check_bind as check_xds_bind
    from pluginserver.catalog import PluginError
    from pluginserver.server import create_app

    plugin_dir = _plugin_dir(args)
    (xds_host, xds_port), (admin_host, admin_port) = args.xds, args.admin
    # Refused before anything starts: xDS carries every credential of the registry.
    try:
        xds_tls = _xds_tls(args)
        check_xds_bind(xds_host, xds_tls)
        if xds_tls is not None:
            xds_tls.check()
    except XdsConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    (plugin_host, plugin_port), (listen_host, listen_port) = args.plugins, args.listen
    try:
        listener_tls, admin_tls = _listener_tls(args, local=False), _admin_tls(args)
    except _TlsUsage as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    # Replicas of one deployment should point at one plugin server, so their configurations
    # (and xDS versions) are identical and an Envoy can fail over without refetching code.
    plugins: ServedApp | None = None
    if args.plugin_server:
        plugins = await serve(create_app(plugin_dir), plugin_host, plugin_port)
        plugin_port = plugins.port
    control_plane = ControlPlane(
        ControlPlaneOptions(
            registry_dir=args.registry,
            plugins_dir=plugin_dir,
            xds_host=xds_host,
            xds_port=xds_port,
            xds_tls=xds_tls,
            status_host=admin_host,
            status_port=admin_port,
            admin_token_file=args.admin_token_file,
            admin_namespace_tokens_file=args.admin_namespace_tokens,
            metrics_token_file=args.metrics_token_file,
            plugin_server_host=plugin_host,
            plugin_server_port=plugin_port,
            plugin_delivery=args.plugin_delivery,
            listen_host=listen_host,
            listen_port=listen_port,
            session_keys_file=args.session_keys,
            session_ttl_s=args.session_ttl,
            credentials=_credential_policy(args),
            session_max_ended=args.session_max_ended,
            limits=_limits(args),
            backend_ca_file=args.backend_tls_ca,
            listener_tls=listener_tls,
            admin_tls=admin_tls,
            access_log=_access_log(args),
            tracing=_tracing(args),
        )
    )
    broker: Broker | None = None
    code = 0
    stop = _StopSignal()
    try:
        if not await stop.first(control_plane.start()):
            return code
        if args.broker_enabled:
            broker = Broker(*args.broker, redis_url=_broker_redis(args), settings=_broker_settings(args))
            await broker.start()
            control_plane.broker = broker  # its streams show in /metrics
        print(
            f"control plane serving {control_plane.store.description}: "
            f"xDS {xds_host}:{control_plane.xds_port}{' (mutual TLS)' if xds_tls else ''}, "
            f"admin {control_plane.admin_url}, "
            f"MCP listener {'https' if listener_tls else 'http'}://{listen_host}:{listen_port}, "
            f"plugins http://{plugin_host}:{plugin_port}"
            + (f", session broker {broker.url} (bus {broker.bus.description})" if broker else ""),
            flush=True,
        )
        await stop.wait()
    except Invalid as error:
        _print_problems(error)
        code = EXIT_INVALID
    except (PluginError, AdminConfigError, KeysInvalid, KeyStoreUnavailable, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        code = EXIT_FAILURE
    finally:
        if broker is not None:
            await broker.stop()
        await control_plane.stop()
        if plugins is not None:
            await plugins.close()
    return code


def _up_admin(args: argparse.Namespace) -> tuple[str, int]:
    """`up --admin HOST:PORT`, with what the deprecated `--admin-host` / `--status-port` replace."""
    host, port = args.admin
    if args.admin_host_old is not None:
        host = args.admin_host_old
    if args.status_port_old is not None:
        port = args.status_port_old
    return host, port


async def _up(args: argparse.Namespace) -> int:
    from mcpgw.admin.auth import AdminConfigError, check_bind, load_token
    from mcpgw.envoyproc import EnvoyNotFound
    from mcpgw.sessions.keys import KeysInvalid
    from mcpgw.stack import Stack, StackOptions
    from mcpgw.tlsreload import TlsFilesError, server_context
    from pluginserver.catalog import PluginError

    admin_host, admin_port = _up_admin(args)
    try:
        listener_tls, admin_tls = _listener_tls(args, local=True), _admin_tls(args)
    except _TlsUsage as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    # Refuse an unsafe admin configuration before starting anything (the control plane checks
    # again; this only makes the failure immediate and quiet).
    try:
        check_bind(
            admin_host,
            load_token(args.admin_token_file),
            tls=admin_tls is not None,
            namespace_tokens=args.admin_namespace_tokens is not None,
        )
        if listener_tls is not None:
            # Envoy runs here: files it could not load are refused now, not after it started.
            server_context(
                TlsFiles(
                    Path(listener_tls.cert),
                    Path(listener_tls.key),
                    None if listener_tls.ca is None else Path(listener_tls.ca),
                )
            )
    except AdminConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except TlsFilesError as error:
        print(f"error: MCP listener TLS: {error}", file=sys.stderr)
        return EXIT_FAILURE
    options = StackOptions(
        registry_dir=args.registry,
        listen_port=args.listen_port,
        xds_port=args.xds_port,
        status_port=admin_port,
        plugin_port=args.plugin_port,
        plugins_dir=_plugin_dir(args),
        envoy_admin_port=args.envoy_admin_port,
        envoy_stats_port=args.envoy_stats_port,
        demo_backend_port=args.demo_backend_port or None,
        envoy_log_level=args.envoy_log_level,
        xds_delta=args.xds_delta,
        admin_host=admin_host,
        admin_token_file=args.admin_token_file,
        admin_namespace_tokens_file=args.admin_namespace_tokens,
        broker_port=args.broker_port,
        broker_redis=_broker_redis(args),
        session_keys_file=args.session_keys,
        session_ttl_s=args.session_ttl,
        credentials=_credential_policy(args),
        session_max_ended=args.session_max_ended,
        limits=_limits(args),
        broker_settings=_broker_settings(args),
        backend_ca_file=args.backend_tls_ca,
        listener_tls=listener_tls,
        admin_tls=admin_tls,
        envoy_max_heap_bytes=args.max_heap,
        access_log=_access_log(args),
        tracing=_tracing(args),
    )
    stack = Stack(options)
    stop = _StopSignal()
    try:
        if not await stop.first(stack.start()):
            print("mcpgw stopped while starting", file=sys.stderr)
            return 0
    except Invalid as error:
        _print_problems(error)
        return EXIT_INVALID
    except (PluginError, EnvoyNotFound, KeysInvalid, OSError, TimeoutError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    assert stack.control_plane is not None and stack.control_plane.store.snapshot is not None
    print("\nmcpgw is up. MCP endpoints (Streamable HTTP):", flush=True)
    for server in stack.control_plane.store.snapshot.servers:
        print(f"  {stack.mcp_base_url}{server.path}    ({len(server.tools)} tools)")
    assert stack.broker is not None
    print(f"HTTP+SSE (2024-11-05): add /sse to an endpoint; session bus: {stack.broker.bus.description}")
    admin = stack.control_plane.admin_url
    print(
        f"admin API: {admin}/v1/servers   status: {admin}/status   "
        f"envoy admin: http://{options.host}:{options.envoy_admin_port}   "
        f"metrics: http://{options.host}:{options.envoy_stats_port}/stats/prometheus   "
        "Ctrl-C stops everything\n",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await stack.stop()
    print("mcpgw stopped", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _demo_unless_given(args: argparse.Namespace) -> Iterator[None]:
    """`up` without -f: a fresh copy of the bundled demo registry, removed when `up` ends.

    A copy, so nothing (admin writes, the session keys kept beside the registry) is ever written
    into the installed package or the checkout; its servers call the demo backend where
    `--demo-backend-port` puts it.
    """
    if args.registry is not None:
        yield
        return
    import tempfile

    from mcpgw.stack import DEMO_BACKEND_PORT, demo_registry

    with tempfile.TemporaryDirectory(prefix="mcpgw-demo-") as work:
        args.registry = demo_registry(Path(work) / "registry", args.demo_backend_port or DEMO_BACKEND_PORT)
        print(
            f"serving the bundled demo registry (a copy in {args.registry}; -f DIR serves yours)", flush=True
        )
        yield


if __name__ == "__main__":
    sys.exit(main())
