#!/usr/bin/env bash
# Builds localhost/mcpgw-controlplane:<version> and localhost/mcpgw-envoy:<version> (also :latest)
# from the wheelhouse, with no network in the build (deploy/README.md is the contract).
#
#   deploy/build-images.sh              podman setup, base image (cached), wheelhouse if absent, both images
#   MCPGW_BASE_IMAGE=IMAGE              another base (it needs python3 >= 3.11 with venv, useradd)
#   MCPGW_REBUILD_WHEELHOUSE=1          rebuild the wheelhouse even when it holds this version's mcpgw
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
py=${PYTHON:-$repo/.venv/bin/python}
[ -x "$py" ] || py=python3
version=$(PYTHONPATH="$repo/controlplane" "$py" -c 'import mcpgw; print(mcpgw.__version__)')
base=${MCPGW_BASE_IMAGE:-localhost/mcpgw-base:bookworm}
wheelhouse="$here/.build/wheelhouse"

"$here/podman/setup.sh"
. "$here/podman/env.sh"
[ "$base" != localhost/mcpgw-base:bookworm ] || "$here/base-image.sh" "$base"
if [ -n "${MCPGW_REBUILD_WHEELHOUSE:-}" ] || ! ls "$wheelhouse"/mcpgw-"$version"-*.whl >/dev/null 2>&1; then
  "$here/wheelhouse.sh" "$wheelhouse"
fi
revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for name in controlplane envoy; do
  start=$(date +%s)
  podman build --quiet --network none --pull=never --layers=false \
    --build-arg BASE="$base" --build-arg VERSION="$version" \
    --build-arg REVISION="$revision" --build-arg CREATED="$created" \
    --file "$here/containers/$name.Containerfile" \
    --tag "localhost/mcpgw-$name:$version" --tag "localhost/mcpgw-$name:latest" \
    "$here" >/dev/null
  echo "image localhost/mcpgw-$name:$version: built in $(( $(date +%s) - start )) s"
done
