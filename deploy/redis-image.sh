#!/usr/bin/env bash
# localhost/mcpgw-redis:bookworm for deploy/compose.yaml (not rebuilt when present). Built with
# the network (apt-get from the Debian mirror); the kit carries it when it exists.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/podman/env.sh"
image=localhost/mcpgw-redis:bookworm
if podman image exists "$image"; then echo "image $image: present"; exit 0; fi
"$here/base-image.sh"
start=$(date +%s)
podman build --quiet --network host --pull=never --layers=false \
  --file "$here/containers/redis.Containerfile" --tag "$image" "$here/containers" >/dev/null
echo "image $image: built in $(( $(date +%s) - start )) s"
