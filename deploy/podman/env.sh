# Source me: `. deploy/podman/env.sh`. Points podman at mcpgw's configuration (runc, vfs,
# lowered ulimits) without touching /etc/containers.
_mcpgw_podman_dir=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)
export CONTAINERS_CONF="$_mcpgw_podman_dir/containers.conf"
export CONTAINERS_STORAGE_CONF="$_mcpgw_podman_dir/storage.conf"
unset _mcpgw_podman_dir
