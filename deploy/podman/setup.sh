#!/usr/bin/env bash
# What building and running mcpgw's images needs: podman, runc (crun fails here), mmdebstrap
# (the base image), kubectl (rendering manifests). Installed with apt-get when we are root on
# Debian/Ubuntu; otherwise one line saying what to install, exit 1.
set -euo pipefail
need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v kubectl >/dev/null || need+=(kubernetes-client)
[ -e /usr/lib/cni/host-local ] || [ -e /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; }
  else
    echo "error: missing ${need[*]}; install them (Debian/Ubuntu: apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
. "$(dirname "$0")/env.sh"
podman info --format '{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}}' >/dev/null
