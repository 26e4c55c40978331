"""The local base behaves like Deep Learning Containers where derived images rely on it.

Each check runs in a container of the base (the one `stack up` built, or
ENVCTL_BASE_IMAGE): the /opt/conda prefix and PATH, `pip install` and `pip install
--user` as root and as the `jupyter` user, JupyterLab and the `python3` kernel, and the
one line `conda` prints. Containers run with no network.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.helpers import BASE_IMAGE

pytestmark = pytest.mark.integration

DOCKER = "/usr/bin/docker"


def sh(script: str, *, user: str = "root") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DOCKER, "run", "--rm", "--network=none", "--user", user, BASE_IMAGE, "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_python_is_a_conda_style_prefix_on_path() -> None:
    code = (
        "import json, shutil, site, sys, sysconfig\n"
        "print(json.dumps({'prefix': sys.prefix, 'base': sys.base_prefix, 'user_site': site.ENABLE_USER_SITE,"
        " 'purelib': sysconfig.get_paths()['purelib'], 'include': sysconfig.get_paths()['include'],"
        " 'which': [shutil.which(p) for p in ('python', 'python3', 'pip', 'jupyter', 'papermill')],"
        " 'path': sys.path}))"
    )
    result = sh(f'python -c "{code}" && python -m site && echo PATH=$PATH && test -z "$VIRTUAL_ENV"')
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout.splitlines()[0])
    assert facts["prefix"] == facts["base"] == "/opt/conda"
    assert facts["user_site"] is True
    assert "ENABLE_USER_SITE: True" in result.stdout
    assert facts["purelib"].startswith("/opt/conda/lib/python3.") and facts["purelib"].endswith(
        "/site-packages"
    )
    assert facts["purelib"] in facts["path"]
    assert facts["which"] == [
        f"/opt/conda/bin/{p}" for p in ("python", "python3", "pip", "jupyter", "papermill")
    ]
    assert "PATH=/opt/conda/bin:" in result.stdout
    headers = sh(
        f"test -f {facts['include']}/Python.h && grep -q 'define SIZEOF_VOID_P 8' {facts['include']}/pyconfig.h"
    )
    assert headers.returncode == 0, headers.stderr


def test_the_standard_library_loads_all_its_extensions() -> None:
    result = sh(
        "ldd /opt/conda/lib/python3.*/lib-dynload/*.so /opt/conda/bin/python3.* | grep 'not found' || true"
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout
    imports = (
        "import ssl, sqlite3, ctypes, lzma, bz2, zlib, decimal, readline, uuid, venv, ensurepip; print('ok')"
    )
    assert sh(f'python -c "{imports}"').stdout.strip() == "ok"


def test_jupyter_user_workbench_style() -> None:
    result = sh("id -u jupyter; getent passwd jupyter | cut -d: -f6; stat -c %U /home/jupyter; pwd; id -un")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1000", "/home/jupyter", "jupyter", "/home/jupyter", "root"]


def test_jupyterlab_and_the_python3_kernel() -> None:
    result = sh("jupyter kernelspec list --json && jupyter lab --version && papermill --version")
    assert result.returncode == 0, result.stderr
    specs = json.loads(result.stdout[: result.stdout.rindex("}") + 1])["kernelspecs"]
    assert specs["python3"]["resource_dir"] == "/opt/conda/share/jupyter/kernels/python3"
    assert specs["python3"]["spec"]["argv"][0] in (
        "python",
        "/opt/conda/bin/python",
        "/opt/conda/bin/python3.11",
    )


# A one-module package made in the container: the installs need no package index.
PACKAGE = (
    "mkdir -p /tmp/pkg && cd /tmp/pkg"
    " && printf 'VALUE = 42\\n' > hello_envctl.py"
    ' && printf \'[project]\\nname = "hello-envctl"\\nversion = "1.0"\\n\' > pyproject.toml'
    " && cd / && pip install --quiet --no-index --no-build-isolation --no-cache-dir {flags} /tmp/pkg"
    " && python -c 'import hello_envctl as h; assert h.VALUE == 42; print(h.__file__)'"
)


@pytest.mark.parametrize(("user", "home"), [("root", "/root"), ("jupyter", "/home/jupyter")])
def test_pip_install_user_works(user: str, home: str) -> None:
    result = sh(PACKAGE.format(flags="--user"), user=user)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"{home}/.local/lib/python3.11/site-packages/hello_envctl.py"


def test_pip_install_as_root_goes_to_the_prefix() -> None:
    result = sh(PACKAGE.format(flags=""))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "/opt/conda/lib/python3.11/site-packages/hello_envctl.py"


def test_conda_install_says_in_one_line_that_there_are_no_channels() -> None:
    result = sh("conda install -y numpy")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no conda channels" in lines[0] and "pip install" in lines[0], lines


def test_no_build_secrets_or_mirror_credentials_in_the_published_base() -> None:
    result = sh(
        "test ! -e /tmp/envctl-build && echo no-build-folder; "
        "cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null; ls -A /etc/apt/auth.conf.d"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no-build-folder\n")
    assert "deb" in result.stdout or "URIs:" in result.stdout  # the sources were read
    assert not re.search(r"[a-z]+://[^/\s]*@", result.stdout), result.stdout
    history = subprocess.run(
        [DOCKER, "history", "--no-trunc", "--format", "{{.CreatedBy}}", BASE_IMAGE],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert history.strip()
    for secret in ("PIP_CERT", "PIP_CONFIG_FILE", "ca.crt", "envctl-build", "apt-auth"):
        assert secret not in history, secret
