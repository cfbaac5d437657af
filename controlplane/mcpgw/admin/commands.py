"""`mcpgw apply`, `get`, `delete`, `session-keys` and `consumers` (admin/consumercli.py): the
admin API from the command line.

`apply` is declarative: each document is created when absent, replaced (under the etag it was
compared against, so a concurrent edit is never overwritten) when different, and left alone
when identical, so applying the same directory twice changes nothing.

Exit codes as for the rest of the CLI: 0 ok, 1 failure (unreachable, unauthorized, not
found, conflict), 2 usage, 3 invalid documents (the API answered 422).
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import yaml

from mcpgw.admin.auth import AdminConfigError, load_token
from mcpgw.admin.client import ADMIN_TLS_CA_ENV, AdminClient, AdminError, default_admin_url, split_key
from mcpgw.registry import yamldocs
from mcpgw.tlsreload import TlsFilesError, client_context

EXIT_FAILURE, EXIT_USAGE, EXIT_INVALID = 1, 2, 3


def _key(text: str) -> str:
    try:
        split_key(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return text


def _admin_url(text: str) -> str:
    """A URL, or HOST:PORT as `mcpgw serve --admin` takes it (then plain http)."""
    return text if "://" in text else f"http://{text}"


def add_commands(commands: Any) -> None:
    """Add apply/get/delete to the `mcpgw` sub-command parser."""
    from mcpgw.cliopts import Deprecated

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--admin",
        type=_admin_url,
        default=default_admin_url(),
        metavar="URL|HOST:PORT",
        help="admin API base URL (default: $MCPGW_ADMIN_URL or http://127.0.0.1:18001)",
    )
    common.add_argument(
        "--admin-token-file",
        dest="token_file",
        type=Path,
        default=None,
        help="bearer token file (default: $MCPGW_ADMIN_TOKEN)",
    )
    common.add_argument(
        "--token-file",
        dest="token_file",
        type=Path,
        action=Deprecated,
        use="--admin-token-file FILE",
        help="deprecated: use --admin-token-file",
    )
    common.add_argument(
        "--admin-tls-ca",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"CA that signed the admin API's certificate, for https URLs (default: ${ADMIN_TLS_CA_ENV}, "
        "else the system's CAs)",
    )
    common.add_argument(
        "--admin-tls-cert",
        type=Path,
        default=None,
        metavar="FILE",
        help="client certificate, when the admin API requires one (serve --admin-tls-ca)",
    )
    common.add_argument("--admin-tls-key", type=Path, default=None, metavar="FILE", help="its private key")

    apply = commands.add_parser(
        "apply", parents=[common], help="create or update MCP servers from YAML files through the admin API"
    )
    apply.add_argument(
        "-f",
        "--file",
        type=Path,
        action="append",
        required=True,
        metavar="FILE|DIR",
        help="a YAML file (several documents allowed), a directory of them, or '-' for stdin; repeatable",
    )

    get = commands.add_parser("get", help="show servers, one server, its tools, or namespaces")
    what = get.add_subparsers(dest="what", required=True, metavar="WHAT")
    for name, help_text in (("servers", "every MCP server"), ("namespaces", "every namespace")):
        sub = what.add_parser(name, parents=[common], help=help_text)
        sub.add_argument("-o", "--output", choices=["table", "yaml", "json"], default="table")
    sub = what.add_parser("server", parents=[common], help="one server's document")
    sub.add_argument("key", type=_key, metavar="NS/NAME")
    sub.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    sub = what.add_parser("tools", parents=[common], help="one server's tools")
    sub.add_argument("key", type=_key, metavar="NS/NAME")
    sub.add_argument("-o", "--output", choices=["table", "yaml", "json"], default="table")

    delete = commands.add_parser("delete", help="delete a server, one tool, or a namespace")
    what = delete.add_subparsers(dest="what", required=True, metavar="WHAT")
    sub = what.add_parser("server", parents=[common], help="delete one MCP server")
    sub.add_argument("key", type=_key, metavar="NS/NAME")
    sub = what.add_parser("tool", parents=[common], help="delete one tool of a server")
    sub.add_argument("key", type=_key, metavar="NS/NAME")
    sub.add_argument("tool", metavar="TOOL")
    sub = what.add_parser(
        "namespace", parents=[common], help="delete a namespace (and with --cascade, its servers)"
    )
    sub.add_argument("namespace", metavar="NS")
    sub.add_argument("--cascade", action="store_true", help="delete every server in it")

    keys = commands.add_parser("session-keys", help="list or rotate the keys that sign MCP session ids")
    what = keys.add_subparsers(dest="what", required=True, metavar="WHAT")
    sub = what.add_parser("list", parents=[common], help="key ids and dates (never secrets)")
    sub.add_argument("-o", "--output", choices=["table", "yaml", "json"], default="table")
    sub = what.add_parser(
        "rotate", parents=[common], help="sign new sessions with a new key on every replica"
    )
    sub.add_argument(
        "--grace",
        type=int,
        default=None,
        metavar="SECONDS",
        help="how long sessions signed with the older keys keep working (default: 3600; 0 ends them now)",
    )
    from mcpgw.admin import consumercli

    consumercli.add_commands(commands, common)


def run(args: argparse.Namespace) -> int:
    try:
        token = load_token(args.token_file)
    except AdminConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        tls = _client_tls(args)
    except (ValueError, TlsFilesError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    client = AdminClient(args.admin, token, tls=tls)
    if client.sends_token_in_clear():
        print(
            f"warning: the admin token goes to {args.admin} unencrypted; serve the admin API with "
            "--admin-tls-cert/--admin-tls-key and use an https:// URL",
            file=sys.stderr,
        )
    try:
        if args.command == "apply":
            return _apply(client, args.file)
        if args.command == "get":
            return _get(client, args)
        if args.command == "session-keys":
            return _session_keys(client, args)
        if args.command == "consumers":
            from mcpgw.admin import consumercli

            return consumercli.run(client, args)
        return _delete(client, args)
    except AdminError as error:
        return _report(error)


def _client_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS client context the flags ask for (None: the default, system CAs)."""
    ca = args.admin_tls_ca
    if ca is None and os.environ.get(ADMIN_TLS_CA_ENV, "").strip():
        ca = Path(os.environ[ADMIN_TLS_CA_ENV].strip())
    cert, key = args.admin_tls_cert, args.admin_tls_key
    if (cert is None) != (key is None):
        raise ValueError("--admin-tls-cert and --admin-tls-key go together")
    if ca is None and cert is None:
        return None
    return client_context(ca, cert, key)


def _report(error: AdminError, where: str | None = None) -> int:
    if error.status == 422:
        for problem in error.problems:
            field = problem.get("path") or "<document>"
            print(f"error: {where or problem.get('file')}: {field}: {problem.get('reason')}", file=sys.stderr)
        if not error.problems:
            print(f"error: {error.message}", file=sys.stderr)
        return EXIT_INVALID
    prefix = f"{where}: " if where else ""
    print(f"error: {prefix}{error.message}", file=sys.stderr)
    return EXIT_FAILURE


# -- apply -----------------------------------------------------------------------------------


def _documents(paths: list[Path]) -> list[tuple[str, Any]]:
    """(label, document) for every YAML document in `paths`; raises ValueError when unreadable."""
    from mcpgw.registry.filesource import registry_files

    found: list[tuple[str, Any]] = []
    for path in paths:
        if str(path) == "-":
            sources = [("<stdin>", sys.stdin.read())]
        else:
            files = registry_files(path) if path.is_dir() else [path]
            try:
                sources = [(str(f), f.read_text(encoding="utf-8")) for f in files]
            except (OSError, UnicodeDecodeError) as error:
                raise ValueError(f"cannot read {path}: {error}") from error
        for label, text in sources:
            try:
                documents = yamldocs.load_all(text)
            except yaml.YAMLError as error:
                raise ValueError(f"{label}: cannot read YAML: {' '.join(str(error).split())}") from error
            for index, document in enumerate(documents):
                found.append((f"{label}#{index}" if len(documents) > 1 else label, document))
    return found


def _normalized(document: Any) -> Any:
    """The document as the API will store and return it (JSON types only)."""
    return json.loads(json.dumps(document, default=str))


def _apply(client: AdminClient, paths: list[Path]) -> int:
    try:
        documents = _documents(paths)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    if not documents:
        print("error: no YAML documents found", file=sys.stderr)
        return EXIT_USAGE
    worst = 0
    for label, raw in documents:
        document = _normalized(raw)
        if isinstance(document, dict) and document.get("kind") == "Consumer":
            from mcpgw.admin.consumercli import apply_consumer

            status = apply_consumer(client, document, label, _try)
            if status not in (0, EXIT_INVALID):
                return status
            worst = max(worst, status)
            continue
        if not isinstance(document, dict) or not isinstance(document.get("name"), str):
            # Let the API say what is wrong, with field paths, like any other invalid document.
            outcome = _try(lambda d=document: client.create_server(d), label)
            worst = max(worst, outcome)
            continue
        # Send what will be stored: with the namespace spelt out, a second apply compares equal.
        document.setdefault("namespace", "default")
        key = f"{document['namespace']}/{document['name']}"
        try:
            split_key(key)
        except ValueError:
            outcome = _try(lambda d=document: client.create_server(d), label)
            worst = max(worst, outcome)
            continue
        try:
            current, etag = client.get_server(key)
        except AdminError as error:
            if error.status != 404:
                return _report(error, label)
            current, etag = None, ""
        if current is None:
            status = _try(lambda d=document: client.create_server(d), label)
            verb = "created"
        elif current == document:
            status, verb = 0, "unchanged"
        else:
            status = _try(lambda d=document, k=key, e=etag: client.replace_server(k, d, if_match=e), label)
            verb = "updated"
        if status == 0:
            print(f"server {key} {verb}", flush=True)
        elif status != EXIT_INVALID:
            return status  # unreachable, unauthorized, conflict: later documents would fail alike
        worst = max(worst, status)
    return worst


def _try(call: Any, label: str) -> int:
    try:
        call()
    except AdminError as error:
        return _report(error, label)
    return 0


# -- get and delete --------------------------------------------------------------------------


def _print(data: Any, output: str) -> None:
    if output == "json":
        print(json.dumps(data, indent=2, default=str))
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _get(client: AdminClient, args: argparse.Namespace) -> int:
    if args.what == "servers":
        servers = client.list_servers()
        if args.output != "table":
            _print(servers, args.output)
        else:
            _table(
                [["SERVER", "TOOLS", "ETAG", "PATH"]]
                + [[s["key"], str(len(s["tools"])), s["etag"], s["path"]] for s in servers]
            )
    elif args.what == "namespaces":
        namespaces = client.list_namespaces()
        if args.output != "table":
            _print(namespaces, args.output)
        else:
            _table([["NAMESPACE", "SERVERS"]] + [[n["name"], str(len(n["servers"]))] for n in namespaces])
    elif args.what == "server":
        document, _ = client.get_server(args.key)
        _print(document, args.output)
    else:
        tools = client.list_tools(args.key)
        if args.output != "table":
            _print(tools, args.output)
        else:
            rows = [[str(t.get("name", "?")), " ".join(str(t.get("description", "")).split())] for t in tools]
            _table([["TOOL", "DESCRIPTION"], *rows])
    return 0


def _delete(client: AdminClient, args: argparse.Namespace) -> int:
    if args.what == "server":
        client.delete_server(args.key)
        print(f"server {args.key} deleted")
    elif args.what == "tool":
        client.delete_tool(args.key, args.tool)
        print(f"tool {args.tool} of server {args.key} deleted")
    else:
        for key in client.delete_namespace(args.namespace, cascade=args.cascade):
            print(f"server {key} deleted")
        print(f"namespace {args.namespace} deleted")
    return 0


def _session_keys(client: AdminClient, args: argparse.Namespace) -> int:
    if args.what == "rotate":
        described = client.rotate_session_keys(args.grace)
        keys = described["keys"]
        print(f"session keys rotated: new sessions are signed with {keys[0]['id']}")
        for key in keys[1:]:
            print(f"  {key['id']} still accepted until {key['accept_until']}")
        return 0
    described = client.list_session_keys()
    if args.output != "table":
        _print(described, args.output)
        return 0
    rows = [
        [
            key["id"],
            "signing" if key["signing"] else "verifying",
            key["created"] or "-",
            key["accept_until"] or "-",
        ]
        for key in described["keys"]
    ]
    _table([["KEY", "ROLE", "CREATED", "ACCEPTED UNTIL"], *rows])
    print(f"store: {described['store']}   session ttl: {described['ttl_seconds']}s")
    return 0
