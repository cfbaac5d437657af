"""The wheel build: bundle what mcpgw needs beyond its Python packages, so it runs outside the repo.

Everything else is declared in pyproject.toml. `build_py` copies the Envoy bootstrap templates
(`envoy/`) and the demo registry (`examples/registry/`) into the package, and builds the filters
(`wasm-filters/build.py`, with the `ziglang` wheel the build requires) straight into it:
`mcpgw/_bundled/{envoy,demo-registry,plugins}`, where `mcpgw.bundled` finds them. Nothing built
lands in the checkout. An editable install (`make install`) skips this: `mcpgw.bundled` then
reads the checkout's own folders, and `make filters` builds the plugins there.

The plugins include the filter's configuration check, a native library for the build machine,
so the wheel is tagged for this platform (py3-none-<platform>): any Python 3, one platform.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# Must match mcpgw.bundled.BUNDLE_DIR and its layout.
BUNDLE = Path("mcpgw", "_bundled")
COPIED = {"envoy": HERE / "envoy", "demo-registry": HERE / "examples" / "registry"}


class BuildPyWithBundle(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / BUNDLE
        shutil.rmtree(target, ignore_errors=True)
        for name, source in COPIED.items():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns(".*", "__pycache__"))
        plugins = target / "plugins"
        build = [sys.executable, str(HERE / "wasm-filters" / "build.py"), "--out", str(plugins)]
        if subprocess.run(build, check=False).returncode != 0:
            raise SystemExit("building the filters for the wheel failed (wasm-filters/build.py, above)")
        if not any(plugins.glob("*/*/plugin.wasm")):
            raise SystemExit(f"no plugin was built into {plugins}")


class PlatformDistribution(Distribution):
    """Native code inside (the check library): files go to platlib, the wheel gets a platform tag."""

    def has_ext_modules(self) -> bool:
        return True


class PlatformWheel(bdist_wheel):
    def get_tag(self) -> tuple[str, str, str]:
        # No Python extension module: any Python 3 on this platform, not only this interpreter.
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(
    distclass=PlatformDistribution,
    cmdclass={"build_py": BuildPyWithBundle, "bdist_wheel": PlatformWheel},
)
