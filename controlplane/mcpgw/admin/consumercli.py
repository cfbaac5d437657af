"""`mcpgw consumers create|rotate|revoke|list`: consumers and their API keys.

A key is made here (`secrets`, 256 bits, prefixed `mcpgw_` so a pasted key is recognizable),
printed once on stdout and never again: the registry stores only its SHA-256. `rotate` adds a
key beside the old ones (both work during the overlap; `--drop-old` ends it), `revoke` removes
one key or the whole consumer.

Against the admin API by default; with `--output-file FILE` (create) or `--file FILE` (rotate,
revoke) a `kind: Consumer` YAML document is written instead, for file registries (GitOps).
Everything but the key goes to stderr, so `KEY=$(mcpgw consumers create alice)` works.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from mcpgw.admin.client import AdminClient, AdminError
from mcpgw.admin.consumers import GLOBAL_SCOPE
from mcpgw.registry import yamldocs
from mcpgw.registry.consumers import KEY_PREFIX, KIND, parse_consumer
from mcpgw.registry.reader import Invalid

__all__ = ["add_commands", "new_key", "run"]

EXIT_FAILURE, EXIT_USAGE, EXIT_INVALID = 1, 2, 3
# 32 bytes: 256 bits from the OS's CSPRNG.
KEY_BYTES = 32
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _key_id() -> str:
    """A fresh key id: the date it was made and a few random hex digits."""
    return f"k-{datetime.datetime.now(datetime.UTC):%Y%m%d}-{secrets.token_hex(3)}"


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    consumers = commands.add_parser(
        "consumers", help="create consumers, rotate or revoke their API keys, list them"
    )
    what = consumers.add_subparsers(dest="what", required=True, metavar="WHAT")

    def scoped(name: str, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = what.add_parser(name, parents=[common], help=help_text)
        sub.add_argument("name", metavar="NAME", help="the consumer's name")
        sub.add_argument(
            "-n", "--namespace", default=None, help="the consumer's namespace (default: a global consumer)"
        )
        return sub

    sub = scoped("create", "create a consumer with a new API key (printed once)")
    sub.add_argument("--group", action="append", default=[], metavar="GROUP", help="a group; repeatable")
    sub.add_argument("--key-id", default=None, help="the key's id (default: k-DATE-RANDOM)")
    sub.add_argument(
        "--output-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the Consumer YAML (hash only) to FILE instead of calling the admin API",
    )
    sub = scoped("rotate", "add a new API key (printed once); the old ones keep working")
    sub.add_argument("--key-id", default=None, help="the new key's id (default: k-DATE-RANDOM)")
    sub.add_argument("--drop-old", action="store_true", help="remove every other key (ends the overlap)")
    sub.add_argument(
        "-f", "--file", type=Path, default=None, metavar="FILE", help="edit this Consumer YAML instead"
    )
    sub = scoped("revoke", "remove one API key, or the whole consumer")
    sub.add_argument("--key-id", default=None, help="the key to remove (default: the consumer itself)")
    sub.add_argument(
        "-f", "--file", type=Path, default=None, metavar="FILE", help="edit this Consumer YAML instead"
    )
    sub = what.add_parser("list", parents=[common], help="consumers and their key ids (never keys)")
    sub.add_argument(
        "-n", "--namespace", default=None, help=f"only this namespace ({GLOBAL_SCOPE}: global ones)"
    )
    sub.add_argument("-o", "--output", choices=["table", "yaml", "json"], default="table")


def run(client: AdminClient, args: argparse.Namespace) -> int:
    try:
        if args.what == "list":
            return _list(client, args)
        if args.what == "create":
            return _create(client, args)
        if args.what == "rotate":
            return _rotate(client, args)
        return _revoke(client, args)
    except Invalid as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_INVALID
    except (OSError, yaml.YAMLError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE


def _scope(args: argparse.Namespace) -> str:
    return args.namespace or GLOBAL_SCOPE


def _label(args: argparse.Namespace) -> str:
    return f"{args.namespace or '*'}/{args.name}"


def _emit_key(key: str, key_id: str, args: argparse.Namespace) -> None:
    print(key)
    print(
        f"consumer {_label(args)}: API key {key_id} created; it is shown only now "
        "(send it as 'Authorization: Bearer <key>')",
        file=sys.stderr,
    )


def _create(client: AdminClient, args: argparse.Namespace) -> int:
    key, key_id = new_key(), args.key_id or _key_id()
    document: dict[str, Any] = {"apiVersion": "mcpgw/v1", "kind": KIND, "name": args.name}
    if args.namespace:
        document["namespace"] = args.namespace
    if args.group:
        document["groups"] = list(args.group)
    document["apiKeys"] = [{"id": key_id, "sha256": key_hash(key)}]
    if args.output_file is not None:
        if args.output_file.exists():
            print(
                f"error: {args.output_file} exists; use 'rotate --file' to add a key to it", file=sys.stderr
            )
            return EXIT_FAILURE
        parse_consumer(document, str(args.output_file))
        _write(args.output_file, document)
    else:
        client.create_consumer(document)
    _emit_key(key, key_id, args)
    return 0


def _rotate(client: AdminClient, args: argparse.Namespace) -> int:
    document, etag = _read(client, args)
    key, key_id = new_key(), args.key_id or _key_id()
    old = list(document.get("apiKeys") or [])
    document["apiKeys"] = ([] if args.drop_old else old) + [{"id": key_id, "sha256": key_hash(key)}]
    _store(client, args, document, etag)
    _emit_key(key, key_id, args)
    if args.drop_old and old:
        ids = ", ".join(str(k.get("id")) for k in old if isinstance(k, dict))
        print(f"consumer {_label(args)}: removed key(s) {ids}", file=sys.stderr)
    return 0


def _revoke(client: AdminClient, args: argparse.Namespace) -> int:
    if args.key_id is None:
        if args.file is not None:
            args.file.unlink()
        else:
            client.delete_consumer(_scope(args), args.name)
        print(f"consumer {_label(args)} revoked (deleted)", file=sys.stderr)
        return 0
    document, etag = _read(client, args)
    keys = list(document.get("apiKeys") or [])
    kept = [k for k in keys if not (isinstance(k, dict) and k.get("id") == args.key_id)]
    if len(kept) == len(keys):
        print(f"error: consumer {_label(args)} has no key {args.key_id!r}", file=sys.stderr)
        return EXIT_FAILURE
    document["apiKeys"] = kept
    _store(client, args, document, etag)
    print(f"consumer {_label(args)}: key {args.key_id} revoked", file=sys.stderr)
    return 0


def _list(client: AdminClient, args: argparse.Namespace) -> int:
    consumers = client.list_consumers(args.namespace)
    if args.output != "table":
        if args.output == "yaml":
            print(yaml.dump(consumers, Dumper=_Dumper, sort_keys=False), end="")
        else:
            print(json.dumps(consumers, indent=2))
        return 0
    rows = [["CONSUMER", "GROUPS", "KEYS"]] + [
        [
            f"{c['namespace'] or '*'}/{c['name']}",
            ",".join(c["groups"]) or "-",
            ",".join(c["apiKeys"]) or "-",
        ]
        for c in consumers
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def apply_consumer(client: AdminClient, document: dict[str, Any], label: str, attempt: Any) -> int:
    """`mcpgw apply` of a `kind: Consumer` document: created, updated under its etag, or left
    alone; `attempt(call, label)` runs a call and reports its error (exit code)."""
    namespace, name = document.get("namespace"), document.get("name")
    if not isinstance(name, str) or not (namespace is None or isinstance(namespace, str)):
        return int(attempt(lambda: client.create_consumer(document), label))
    scope = namespace or GLOBAL_SCOPE
    try:
        current, etag = client.get_consumer(scope, name)
    except AdminError as error:
        if error.status != 404:
            return int(attempt(lambda e=error: _raise(e), label))
        current, etag = None, ""
    if current is None:
        status, verb = int(attempt(lambda: client.create_consumer(document), label)), "created"
    elif current == document:
        status, verb = 0, "unchanged"
    else:
        status = int(attempt(lambda: client.replace_consumer(scope, name, document, if_match=etag), label))
        verb = "updated"
    if status == 0:
        print(f"consumer {namespace or '*'}/{name} {verb}", flush=True)
    return status


def _raise(error: Exception) -> None:
    raise error


# -- where the document lives: the admin API, or a file ------------------------------------------


def _read(client: AdminClient, args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    if args.file is None:
        document, etag = client.get_consumer(_scope(args), args.name)
        return dict(document), etag
    documents = yamldocs.load_all(args.file.read_text(encoding="utf-8"))
    if len(documents) != 1 or not isinstance(documents[0], dict) or documents[0].get("kind") != KIND:
        raise ValueError(f"{args.file}: expected one kind: {KIND} document")
    document = dict(documents[0])
    if document.get("name") != args.name or document.get("namespace") != args.namespace:
        raise ValueError(
            f"{args.file} defines consumer {document.get('namespace') or '*'}/{document.get('name')}"
        )
    return document, None


def _store(client: AdminClient, args: argparse.Namespace, document: dict[str, Any], etag: str | None) -> None:
    if args.file is None:
        # Under the etag read: a concurrent edit is refused (412), never overwritten.
        client.replace_consumer(_scope(args), args.name, document, if_match=etag)
        return
    parse_consumer(document, str(args.file))
    _write(args.file, document)


def _write(path: Path, document: dict[str, Any]) -> None:
    """Atomically: a registry watcher never reads half a document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(document, Dumper=_Dumper, sort_keys=False)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
