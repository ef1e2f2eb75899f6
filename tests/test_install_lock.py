"""Installs cannot drift: requirements.lock is what `make install` (and so CI) installs, and what this venv holds."""

import importlib.metadata
import re
import subprocess
import sysconfig
from pathlib import Path

from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCK = REPO_ROOT / "requirements.lock"
PROJECT = "mocapact-envs"


def locked_versions() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, separator, version = line.partition("==")
        assert separator and version, f"{LOCK.name}: {line!r} is not an exact 'name==version' pin"
        pins[canonicalize_name(name)] = version
    return pins


def test_ci_runs_make_test_which_installs_from_the_lock():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE)
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^test: install$", makefile, re.MULTILINE)
    assert re.search(r"^LOCK := requirements\.lock$", makefile, re.MULTILINE)
    # The install rule reruns when the lock changes.
    assert re.search(r"^\$\(VENV\)/\.installed: .*\$\(LOCK\)", makefile, re.MULTILINE)


def test_every_install_command_is_pinned_by_the_lock(tmp_path):
    # In a copy of the checkout without a venv, `make -n install` lists every pip command install runs.
    for name in ("Makefile", "pyproject.toml", "requirements.lock"):
        (tmp_path / name).write_bytes((REPO_ROOT / name).read_bytes())
    result = subprocess.run(["make", "-n", "install"], cwd=tmp_path, capture_output=True, text=True, check=True)
    installs = [line for line in result.stdout.splitlines() if re.search(r"pip install", line)]
    assert installs, result.stdout
    for command in installs:
        # Each pip install reads the lock (-r installs it, -c constrains), or installs the project alone.
        assert re.search(r"(-r|-c) requirements\.lock", command) or "--no-deps -e ." in command, command
    assert any("-r requirements.lock" in command for command in installs)


def test_the_venv_holds_exactly_the_locked_versions():
    locked = locked_versions()
    # The venv's own site-packages: an imported Ray puts its vendored psutil and colorama on sys.path
    # (ray/thirdparty_files), which an earlier test in this worker may have done.
    site_packages = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions(path=site_packages)
        if canonicalize_name(dist.metadata["Name"]) != PROJECT
    }
    differing = {name: (locked.get(name), installed.get(name)) for name in locked.keys() | installed.keys()}
    differing = {name: pair for name, pair in differing.items() if pair[0] != pair[1]}
    assert not differing, (
        "the venv differs from requirements.lock as {name: (locked, installed)}: "
        f"{differing}; run `make install`, or `make lock` to take new versions on purpose"
    )
