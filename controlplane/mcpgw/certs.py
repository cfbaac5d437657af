"""`mcpgw certs`: a CA and certificates for a test or a small install (mcpgw.pki).

    mcpgw certs ca --out pki/                                   # pki/ca.crt, pki/ca.key
    mcpgw certs issue --ca pki/ --name cp --dns cp.example.com --server
    mcpgw certs issue --ca pki/ --name envoy-1 --node mcpgw/envoy-1   # xDS client of node envoy-1

Production installs bring certificates from their own PKI (cert-manager, SPIRE, a corporate
CA); docs/security.md gives the equivalent `openssl` commands.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from mcpgw.pki import DEFAULT_DAYS, Issued, issue, make_ca
from mcpgw.xds.tls import node_identity

EXIT_USAGE = 2


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = commands.add_parser("certs", help="make a CA and certificates for a test or small install")
    sub = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    ca = sub.add_parser("ca", help="make a CA: DIR/ca.crt and DIR/ca.key (mode 0600)")
    ca.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write ca.crt and ca.key")
    ca.add_argument("--name", default="mcpgw CA", help="the CA's common name (default: %(default)s)")
    ca.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity (default: %(default)s)")
    leaf = sub.add_parser("issue", help="issue a certificate signed by a CA made with `certs ca`")
    leaf.add_argument(
        "--ca", type=Path, required=True, metavar="DIR", help="directory holding ca.crt and ca.key"
    )
    leaf.add_argument("--name", required=True, help="file name (NAME.crt, NAME.key) and common name")
    leaf.add_argument(
        "--out", type=Path, metavar="DIR", help="where to write them (default: the CA directory)"
    )
    leaf.add_argument("--dns", action="append", default=[], metavar="NAME", help="DNS SAN; repeatable")
    leaf.add_argument("--ip", action="append", default=[], metavar="ADDRESS", help="IP SAN; repeatable")
    leaf.add_argument("--uri", action="append", default=[], metavar="URI", help="URI SAN; repeatable")
    leaf.add_argument(
        "--node",
        metavar="CLUSTER/ID",
        help="an Envoy's xDS client certificate: URI SAN spiffe://mcpgw/CLUSTER/ID (implies --client)",
    )
    leaf.add_argument("--server", action="store_true", help="for TLS servers (the default without --client)")
    leaf.add_argument("--client", action="store_true", help="for TLS clients")
    leaf.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    try:
        written = _make_ca(args) if args.certs_command == "ca" else _issue(args)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    for path in written:
        print(path)
    return 0


def _make_ca(args: argparse.Namespace) -> list[Path]:
    if (args.out / "ca.key").exists():
        raise ValueError(
            f"{args.out / 'ca.key'} exists: refusing to replace a CA (its certificates would die)"
        )
    return list(make_ca(args.name, days=args.days).write(args.out, "ca"))


def _issue(args: argparse.Namespace) -> list[Path]:
    try:
        ca = Issued((args.ca / "ca.crt").read_bytes(), (args.ca / "ca.key").read_bytes())
    except OSError as error:
        raise ValueError(
            f"no CA in {args.ca} (make one with `mcpgw certs ca --out {args.ca}`): {error}"
        ) from error
    uris = list(args.uri)
    client = args.client
    if args.node is not None:
        cluster, sep, node_id = args.node.partition("/")
        if not sep or not cluster or not node_id:
            raise ValueError(
                f"--node must be CLUSTER/ID (the Envoy's node.cluster and node.id), got {args.node!r}"
            )
        uris.append(node_identity(cluster, node_id))
        client = True
    for address in args.ip:
        try:
            ipaddress.ip_address(address)
        except ValueError as error:
            raise ValueError(f"--ip {address!r} is not an IP address") from error
    server = args.server or not client
    leaf = issue(
        ca, args.name, dns=args.dns, ips=args.ip, uris=uris, server=server, client=client, days=args.days
    )
    return list(leaf.write(args.out or args.ca, args.name))
