#!/usr/bin/env bash
# The offline kit (`make bundle`): everything to install mcpgw where there is no internet, in
# deploy/.build/mcpgw-<version>-offline/ and a tarball beside it (deploy/README.md lists what it
# holds). Builds the images (and the wheelhouse) first when they are missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
py=${PYTHON:-$repo/.venv/bin/python}
[ -x "$py" ] || py=python3
version=$(PYTHONPATH="$repo/controlplane" "$py" -c 'import mcpgw; print(mcpgw.__version__)')
kit="$here/.build/mcpgw-$version-offline"
start=$(date +%s)
. "$here/podman/env.sh"
if ! podman image exists "localhost/mcpgw-controlplane:$version" || ! podman image exists "localhost/mcpgw-envoy:$version"; then
  "$here/build-images.sh"
fi
rm -rf "$kit" "$kit.tar.gz"
mkdir -p "$kit/wheelhouse" "$kit/plugins" "$kit/images" "$kit/manifests"
cp "$here"/.build/wheelhouse/*.whl "$kit/wheelhouse/"
echo "$version" > "$kit/VERSION"
# The plugins exactly as the wheel carries them (plugin.wasm, its .sha256, the configuration
# check), for a plugin server or `--plugin-dir` of your own.
"$py" - "$kit/wheelhouse/mcpgw-$version-"*.whl "$kit/plugins" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, out = sys.argv[1], Path(sys.argv[2])
prefix = "mcpgw/_bundled/plugins/"
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = out / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
PY
for name in controlplane envoy; do
  podman save --quiet --format oci-archive --output "$kit/images/mcpgw-$name-$version.oci.tar" \
    "localhost/mcpgw-$name:$version"
done
# Kubernetes: the kustomize tree (for `kubectl apply -k`, and to patch) and every overlay rendered.
if [ -d "$here/kustomize/overlays" ]; then
  cp -r "$here/kustomize" "$kit/kustomize"
  command -v kubectl >/dev/null || { echo "error: kubectl is missing; run deploy/podman/setup.sh" >&2; exit 1; }
  for overlay in "$here"/kustomize/overlays/*/; do
    kubectl kustomize "$overlay" > "$kit/manifests/$(basename "$overlay").yaml"
  done
fi
rmdir --ignore-fail-on-non-empty "$kit/manifests"
[ ! -f "$here/compose.yaml" ] || cp "$here/compose.yaml" "$kit/compose.yaml"
# Prometheus: the alert and recording rules, their promtool tests, an example scrape config.
[ ! -d "$here/prometheus" ] || cp -r "$here/prometheus" "$kit/prometheus"
# Grafana: the dashboard over those metrics and rules (import it: docs/observability.md).
[ ! -d "$here/grafana" ] || cp -r "$here/grafana" "$kit/grafana"
cp "$here/kit/install.sh" "$kit/install.sh"
(cd "$kit" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)
tar -C "$(dirname "$kit")" -cf - "$(basename "$kit")" | gzip -1 > "$kit.tar.gz"
(cd "$(dirname "$kit")" && sha256sum "$(basename "$kit").tar.gz" > "$(basename "$kit").tar.gz.sha256")
echo "kit: $kit/ and $kit.tar.gz ($(du -sh "$kit.tar.gz" | cut -f1), $(( $(date +%s) - start )) s)"
