#!/usr/bin/env bash
# The wheelhouse the images and the offline kit install from (`pip install --no-index`):
# mcpgw's wheel (its build compiles the filter into it; docs/install.md) and every runtime
# dependency, as wheels for this platform (the images' Debian bookworm is the same
# CPython 3.11 / glibc x86_64 as CI's). Needs the network (PyPI or $PIP_INDEX_URL) once;
# pip's cache serves the dependencies after that.
#
#   deploy/wheelhouse.sh [DIR]     default deploy/.build/wheelhouse
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out=${1:-$here/.build/wheelhouse}
py=${PYTHON:-$repo/.venv/bin/python}
[ -x "$py" ] || py=python3
mkdir -p "$out"
rm -f "$out"/mcpgw-*.whl
start=$(date +%s)
# --only-binary: the air-gapped side has no compiler; every dependency must come as a wheel.
"$py" -m pip wheel --quiet --wheel-dir "$out" --only-binary=:all: --no-binary=mcpgw "$repo"
# Markers that depend on the exact interpreter are evaluated against this one, and pip download
# --python-version does not change python_full_version: redis needs async-timeout below Python
# 3.11.3, and bookworm's python3 (the images, most air-gapped Debian 12 hosts) is 3.11.2.
"$py" -m pip download --quiet --dest "$out" --only-binary=:all: --no-deps "async-timeout>=4.0.3"
# pip itself, so an old pip on the air-gapped side can be upgraded from the kit.
"$py" -m pip download --quiet --dest "$out" --only-binary=:all: pip
echo "wheelhouse: $out ($(ls "$out" | wc -l) wheels, $(du -sh "$out" | cut -f1), $(( $(date +%s) - start )) s)"
