"""Fresh venvs with the project installed from its wheel, as a user installs it, offline.

The dependencies come from a wheelhouse of the exact versions this venv holds (the lock:
``test_install_lock.py`` checks it): each installed distribution is packed back into a wheel from
the files its ``RECORD`` lists, so pip installs them with ``--no-index`` from that folder alone, without
network or pip's configuration (this machine's ``find-links`` holds a torch wheel). A venv is built once
per dependency set and kept in the cache (``$MOCAPACT_CACHE_DIR``, else ``~/.cache/mocapact_envs``) under
a key of the distributions and versions it holds; each use reinstalls the project from a wheel built
from the checkout's files, then ``pip check`` confirms every requirement is met by what is installed.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import sys_tags
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT = "mocapact-envs"
#: What the wheel is built from (what ``pyproject.toml`` packages), copied so the build leaves the checkout alone.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "mocapact_envs", "baselines")
#: Bumped when the way venvs are built changes, so cached ones are rebuilt.
BUILD_VERSION = "1"
# pip files of an installed distribution that a wheel does not hold (pip writes them when installing).
INSTALLER_FILES = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json"}


def pip_environment() -> dict[str, str]:
    """The environment for pip: no configuration file, no PIP_* settings (find-links, indexes), no cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    return env | {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run(command: Sequence[str | Path], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result


# -- the project's wheel ---------------------------------------------------------------


def build_project_wheel(out_dir: Path) -> Path:
    """``pip wheel . --no-deps`` of a copy of the checkout's packaged files (this venv's setuptools, offline)."""
    source = out_dir / "source"
    for name in SOURCES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    wheels = out_dir / "wheel"
    run(
        [sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation", "-w", wheels],
        env=pip_environment(),
    )
    (wheel,) = wheels.glob("mocapact_envs-*.whl")
    return wheel


def wheel_requirements(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel's metadata."""
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


# -- dependencies: what this venv holds ------------------------------------------------


def site_packages() -> list[str]:
    return sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})


def installed() -> dict[str, importlib.metadata.Distribution]:
    return {
        canonicalize_name(dist.metadata["Name"]): dist
        for dist in importlib.metadata.distributions(path=site_packages())
    }


def requirement_closure(requirements: Iterable[str], extras: Iterable[str] = ()) -> list[str]:
    """The installed distributions ``requirements`` (with ``extras`` of the requiring project) need, transitively,
    markers evaluated for this interpreter; names as canonical names, the project itself left out."""
    dists = installed()
    todo = [(Requirement(r), frozenset(extras)) for r in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement, wanted_by = todo.pop()
        if requirement.marker is not None and not any(
            requirement.marker.evaluate(default_environment() | {"extra": extra}) for extra in (wanted_by or {""})
        ):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        if name == canonicalize_name(PROJECT):  # a self-referencing extra: [all] = [train,ray,data]
            todo += [(Requirement(r), frozenset(requirement.extras)) for r in project_requirements()]
            continue
        assert name in dists, f"{requirement} is not installed in {sys.prefix}"
        todo += [(Requirement(r), frozenset(requirement.extras)) for r in dists[name].requires or ()]
    return sorted({name for name, _ in seen} - {canonicalize_name(PROJECT)})


def project_requirements() -> list[str]:
    return importlib.metadata.distribution(PROJECT).requires or []


def repack(dist: importlib.metadata.Distribution, out_dir: Path) -> Path:
    """A wheel of an installed distribution: the files its RECORD lists inside site-packages (no scripts, no
    bytecode), its metadata, a new RECORD."""
    info_dir = Path(dist._path)  # type: ignore[attr-defined]  (the .dist-info folder)
    root = info_dir.parent
    wheel_text = (info_dir / "WHEEL").read_text()
    tags = [line.split(":", 1)[1].strip() for line in wheel_text.splitlines() if line.startswith("Tag:")]
    supported = {str(tag) for tag in sys_tags()}
    tag = next(t for t in tags if t in supported)  # the one this interpreter installed it under
    name = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
    target = out_dir / f"{name}-{dist.version}-{tag}.whl"
    records = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for file in dist.files or ():
            relative = Path(file)
            if ".." in relative.parts or relative.suffix == ".pyc" or "__pycache__" in relative.parts:
                continue
            if relative.parent == Path(info_dir.name) and relative.name in INSTALLER_FILES:
                continue
            path = root / relative
            if not path.is_file():
                continue
            data = path.read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            archive.writestr(relative.as_posix(), data)
            records.append(f"{relative.as_posix()},sha256={digest},{len(data)}")
        records.append(f"{info_dir.name}/RECORD,,")
        archive.writestr(f"{info_dir.name}/RECORD", "\n".join(records) + "\n")
    return target


# -- venvs -----------------------------------------------------------------------------


def cache_root() -> Path:
    return Path(os.environ.get("MOCAPACT_CACHE_DIR") or Path.home() / ".cache" / "mocapact_envs") / "test-venvs"


def venv_key(names: Sequence[str]) -> str:
    dists = installed()
    pins = "\n".join(f"{name}=={dists[name].version}" for name in names)
    text = f"{BUILD_VERSION}\n{sys.version}\n{pins}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def project_venv(label: str, names: Sequence[str], wheel: Path, first: Sequence[str] = ()) -> Iterator[Path]:
    """The venv of :func:`dependency_venv` with the project installed from ``wheel``, held for the caller alone
    (another test session waits) until the block ends."""
    venv = cache_root() / f"{label}-{venv_key(names)}"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        remove_stale_venvs(label, keep=venv)
        dependency_venv(venv, names, first)
        install_project(venv, wheel)
        yield venv


def remove_stale_venvs(label: str, keep: Path) -> None:
    """Removes the cached ``label`` venvs of other dependency sets (an older lock) that no session is using."""
    for other in keep.parent.glob(f"{label}-*.lock"):
        folder = other.with_suffix("")
        if folder == keep:
            continue
        with open(other, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(folder.with_name(folder.name + ".wheelhouse"), ignore_errors=True)
            other.unlink()


def dependency_venv(venv: Path, names: Sequence[str], first: Sequence[str] = ()) -> Path:
    """A venv at ``venv`` holding exactly the installed versions of ``names`` (``first`` installed before the
    rest), built from repacked wheels once and then kept."""
    python = venv / "bin" / "python"
    if (venv / ".complete").is_file():
        return venv
    shutil.rmtree(venv, ignore_errors=True)  # an unfinished build
    wheelhouse = venv.with_name(venv.name + ".wheelhouse")
    shutil.rmtree(wheelhouse, ignore_errors=True)
    wheelhouse.mkdir(parents=True)
    try:
        dists = installed()
        for name in names:
            repack(dists[name], wheelhouse)
        run([sys.executable, "-m", "venv", venv])
        pip = [python, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", wheelhouse, "--no-deps"]
        pins = [f"{name}=={dists[name].version}" for name in names]
        ordered = [p for p in pins if p.split("==")[0] in first]
        for batch in (ordered, [p for p in pins if p not in ordered]):
            if batch:
                run([*pip, *batch], env=pip_environment())
    finally:
        shutil.rmtree(wheelhouse, ignore_errors=True)
    (venv / ".complete").write_text(f"{' '.join(names)}\n")
    return venv


def install_project(venv: Path, wheel: Path) -> None:
    """The project from ``wheel``, non-editable, replacing any earlier install; then ``pip check``."""
    python = venv / "bin" / "python"
    run(
        [python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--force-reinstall", wheel],
        env=pip_environment(),
    )
    run([python, "-m", "pip", "check"], env=pip_environment())


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6
