"""`python -m pluginserver --bind HOST:PORT [--plugin-dir DIR]`: the plugin server on its own.

For deployments that run it apart from the control plane (`mcpgw serve --no-plugin-server
--plugins HOST:PORT`), e.g. the Kubernetes Deployment mcpgw-plugins (deploy/kustomize). It
serves the same plugin folder `mcpgw serve` would: the plugins mcpgw ships with by default.
SIGTERM and SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aiohttp import web

from mcpgw.bootstrap import parse_address
from pluginserver.catalog import scan
from pluginserver.server import DEFAULT_ROOT, create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pluginserver", description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1:18002", metavar="HOST:PORT", help="where to listen")
    parser.add_argument(
        "--plugin-dir", type=Path, default=DEFAULT_ROOT, metavar="DIR", help="the plugin folder"
    )
    args = parser.parse_args(argv)
    try:
        host, port = parse_address(args.bind)
    except ValueError as error:
        print(f"error: --bind: {error}", file=sys.stderr)
        return 2
    if not args.plugin_dir.is_dir():
        print(f"error: --plugin-dir {args.plugin_dir}: not a directory", file=sys.stderr)
        return 2
    plugins, problems = scan(args.plugin_dir)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(
        f"plugin server on http://{host}:{port}/plugins/ ({len(plugins)} plugins from {args.plugin_dir})",
        flush=True,
    )
    web.run_app(create_app(args.plugin_dir), host=host, port=port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
