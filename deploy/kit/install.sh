#!/usr/bin/env bash
# mcpgw's offline kit: install on a machine without internet. Everything comes from this folder;
# nothing is downloaded (pip runs with --no-index). docs/deploy.md walks through it.
#
#   ./install.sh verify                  check every file against SHA256SUMS (every command does this first)
#   ./install.sh python [VENV]           mcpgw into a venv (default ./mcpgw-venv) from wheelhouse/
#   ./install.sh images [REGISTRY]       load images/*.oci.tar into podman (or docker); with REGISTRY,
#                                        also tag and push them there (your in-house registry)
#   ./install.sh kubernetes OVERLAY      kubectl apply -k kustomize/overlays/OVERLAY (single, ha)
set -euo pipefail
kit=$(cd "$(dirname "$0")" && pwd)
version=$(cat "$kit/VERSION")

verify() {
  (cd "$kit" && sha256sum --quiet --check SHA256SUMS) || { echo "error: the kit is damaged (SHA256SUMS)" >&2; exit 1; }
  echo "kit mcpgw $version: every file matches SHA256SUMS"
}

engine() {
  if command -v podman >/dev/null; then echo podman
  elif command -v docker >/dev/null; then echo docker
  else echo "error: neither podman nor docker is installed" >&2; exit 1
  fi
}

command=${1:-}
case "$command" in
  verify)
    verify ;;
  python)
    verify
    venv=${2:-./mcpgw-venv}
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
      { echo "error: mcpgw needs Python >= 3.11 (python3 is $(python3 -V 2>&1))" >&2; exit 1; }
    python3 -m venv "$venv"
    PIP_NO_INDEX=1 "$venv/bin/python" -m pip install --quiet --no-index --find-links "$kit/wheelhouse" \
      --only-binary=:all: "mcpgw==$version"
    echo "installed: $venv/bin/mcpgw ($("$venv/bin/mcpgw" --version | head -1))" ;;
  images)
    verify
    run=$(engine)
    for archive in "$kit"/images/*.oci.tar; do
      name=$(basename "$archive" .oci.tar)            # mcpgw-controlplane-0.1.0
      image="localhost/${name%-"$version"}:$version"  # localhost/mcpgw-controlplane:0.1.0
      "$run" load --quiet --input "$archive" >/dev/null
      echo "loaded $image"
      if [ -n "${2:-}" ]; then
        "$run" tag "$image" "$2/${name%-"$version"}:$version"
        "$run" push "$2/${name%-"$version"}:$version"
      fi
    done ;;
  kubernetes)
    verify
    overlay=${2:?usage: ./install.sh kubernetes OVERLAY (one of: $(ls "$kit/kustomize/overlays" 2>/dev/null | tr '\n' ' '))}
    kubectl apply -k "$kit/kustomize/overlays/$overlay" ;;
  *)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2 ;;
esac
