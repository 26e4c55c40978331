"""Make /opt/conda a Python prefix of its own, as in Deep Learning Containers.

Run by the builder stage with Debian's python3. It copies Debian's interpreter, its
standard library and its headers into PREFIX and undoes the Debian-specific parts, so
the copy behaves like a conda environment's Python: sys.prefix == sys.base_prefix ==
PREFIX, packages go to PREFIX/lib/pythonX.Y/site-packages, user site-packages are on,
no PEP 668 marker, and C extensions build against PREFIX/include. Every patch checks
that the text it replaces is there, so a changed Debian Python fails the build here.
"""

from __future__ import annotations

import pprint
import shutil
import sys
from pathlib import Path

VERSION = f"python{sys.version_info[0]}.{sys.version_info[1]}"
MULTIARCH = sys.implementation._multiarch  # type: ignore[attr-defined]


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if text.count(old) != 1:
        sys.exit(f"conda_prefix: expected one {old!r} in {path}, found {text.count(old)}")
    path.write_text(text.replace(old, new))


def copy_interpreter(prefix: Path) -> None:
    (prefix / "bin").mkdir(parents=True)
    shutil.copy2(f"/usr/bin/{VERSION}", prefix / "bin" / VERSION)
    for name in ("python3", "python"):
        (prefix / "bin" / name).symlink_to(VERSION)
    skip = shutil.ignore_patterns("__pycache__", "config-*", "sitecustomize.py", "EXTERNALLY-MANAGED")
    shutil.copytree(f"/usr/lib/{VERSION}", prefix / "lib" / VERSION, ignore=skip)
    (prefix / "lib" / VERSION / "site-packages").mkdir()
    include = prefix / "include" / VERSION
    shutil.copytree(f"/usr/include/{VERSION}", include)
    shutil.copy2(f"/usr/include/{MULTIARCH}/{VERSION}/pyconfig.h", include / "pyconfig.h")
    wheels = prefix / "share" / "python-wheels"
    shutil.copytree("/usr/share/python-wheels", wheels)


def patch_site(lib: Path) -> None:
    """getsitepackages(): PREFIX/lib/pythonX.Y/site-packages, as upstream Python has it.

    Only read with `-X frozen_modules=off`; otherwise sitecustomize.py does the same.
    """
    path = lib / "site.py"
    text = path.read_text()
    start = text.index("            if is_virtual_environment:\n")
    end_marker = '                                    "dist-packages")\n                sitepackages.append(path)\n'
    end = text.index(end_marker, start) + len(end_marker)
    upstream = (
        "            for libdir in libdirs:\n"
        '                path = os.path.join(prefix, libdir, "python%d.%d" % sys.version_info[:2],\n'
        '                                    "site-packages")\n'
        "                sitepackages.append(path)\n"
    )
    path.write_text(text[:start] + upstream + text[end:])


SITECUSTOMIZE = '''"""PREFIX/lib/pythonX.Y/site-packages on sys.path, as upstream Python's site module adds it.

Written by docker/base/conda_prefix.py. Python 3.11 runs a frozen copy of site.py (Debian's,
which looks for dist-packages), so the prefix's own site-packages is added here, after the
user site-packages as upstream orders them. Virtual environments made from this Python
keep their own site-packages only.
"""

import os
import site
import sys

if sys.prefix == sys.base_prefix:
    _SITE_PACKAGES = os.path.join(sys.prefix, "lib", "python%d.%d" % sys.version_info[:2], "site-packages")
    site.addsitedir(_SITE_PACKAGES)

    def getsitepackages(prefixes=None):
        return [_SITE_PACKAGES]

    site.getsitepackages = getsitepackages
'''


def patch_sysconfig(lib: Path, prefix: Path) -> None:
    """Install scheme posix_prefix (not Debian's posix_local) and paths under PREFIX."""
    path = lib / "sysconfig.py"
    replace_once(
        path,
        "deb_build = os.environ.get('DEB_PYTHON_INSTALL_LAYOUT', 'posix_local')",
        "deb_build = 'posix_prefix'",
    )
    replace_once(path, "            prefix_scheme = 'posix_local'\n", "            prefix_scheme = 'posix_prefix'\n")
    data = lib / f"_sysconfigdata__{MULTIARCH}.py"
    namespace: dict[str, dict[str, object]] = {}
    exec(compile(data.read_text(), str(data), "exec"), namespace)  # noqa: S102 - Python's own file
    values = namespace["build_time_vars"]
    moved = {
        "prefix": prefix,
        "exec_prefix": prefix,
        "BINDIR": prefix / "bin",
        "INCLUDEDIR": prefix / "include",
        "CONFINCLUDEDIR": prefix / "include",
        "INCLUDEPY": prefix / "include" / VERSION,
        "CONFINCLUDEPY": prefix / "include" / VERSION,
        "LIBDEST": lib,
        "DESTLIB": lib,
        "BINLIBDEST": lib,
        "MACHDESTLIB": lib,
        "DESTSHARED": lib / "lib-dynload",
        "datarootdir": prefix / "share",
        "WHEEL_PKG_DIR": prefix / "share" / "python-wheels",
    }
    for key, value in moved.items():
        if key not in values:
            sys.exit(f"conda_prefix: {key} is not in {data}")
        values[key] = str(value)
    data.write_text("# Moved to " + str(prefix) + " by conda_prefix.py\nbuild_time_vars = " + pprint.pformat(values) + "\n")


def main() -> None:
    prefix = Path(sys.argv[1])
    if prefix.exists():
        sys.exit(f"conda_prefix: {prefix} exists")
    copy_interpreter(prefix)
    lib = prefix / "lib" / VERSION
    patch_site(lib)
    (lib / "sitecustomize.py").write_text(SITECUSTOMIZE)
    patch_sysconfig(lib, prefix)


if __name__ == "__main__":
    main()
