"""Where reference motion comes from: one setting, ``MOCAPACT_MOCAP_PATH``.

The setting (or the ``mocap_path`` argument wherever a source is chosen) names
either a dm_control-format HDF5 file, such as the official
``cmu_2020_dfe3e9e0.h5``, or a folder of CMU ``.amc`` files. A folder's clips are
converted on first use into cached HDF5 files keyed by each source file's content,
so a changed file is converted again. Without the setting, dm_control's official
file is used when it is present or can be downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np

from mocapact_envs.files import replace_atomically
from mocapact_envs.mocap import amc
from mocapact_envs.mocap.ids import Snippet, amc_file_clip_id, resolve_snippets, suggest
from mocapact_envs.mocap.retarget import ClipQuality, subject_asf_path

MOCAP_PATH_ENV = "MOCAPACT_MOCAP_PATH"
CACHE_DIR_ENV = "MOCAPACT_CACHE_DIR"


class MocapSourceError(ValueError):
    """The reference-motion source is missing, unreadable or lacks what was asked."""


def cache_dir() -> Path:
    """Where converted clips are cached (``MOCAPACT_CACHE_DIR`` overrides)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mocapact_envs"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def atomic_h5_write(target: Path, fill) -> None:
    """Writes an HDF5 file through ``fill(h5)`` under a temporary name, then renames it into place."""

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as h5:
            fill(h5)

    replace_atomically(target, write)


@dataclass(frozen=True)
class ClipSet:
    """Clips ready for dm_control: one HDF5 file holding them and their bounds."""

    hdf5_path: Path
    snippets: tuple[Snippet, ...]
    """Every snippet with ``end`` resolved to a step inside its clip."""

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(s.clip_id for s in self.snippets)

    @property
    def start_steps(self) -> tuple[int, ...]:
        return tuple(s.start for s in self.snippets)

    @property
    def end_steps(self) -> tuple[int, ...]:
        return tuple(s.end for s in self.snippets)  # type: ignore[misc]

    def reference_features(self, index: int) -> dict[str, np.ndarray]:
        """Reference features of snippet ``index``, each shaped (steps, ...), as dm_control's
        ``Trajectory.as_dict`` gives them (without its ``walker/`` prefix)."""
        snippet = self.snippets[index]
        with h5py.File(self.hdf5_path, "r") as h5:
            walker = h5[f"{snippet.clip_id}/walkers/walker_0"]
            features = {}
            for name in amc.WALKER_POSE_FIELDS:
                values = np.asarray(walker[name][:, snippet.start : snippet.end + 1]).T
                width = 4 if name in ("quaternion", "body_quaternions") else 3
                if name in ("end_effectors", "appendages", "body_positions", "body_quaternions"):
                    values = values.reshape(len(values), -1, width)
                features[name] = values
        return features

    def quality(self, clip_id: str) -> ClipQuality | None:
        """The conversion's quality report of a clip; None for clips not converted here (dm_control's
        official file is already fitted to the walker and carries none)."""
        with h5py.File(self.hdf5_path, "r") as h5:
            text = h5[clip_id].attrs.get("quality")
        return None if text is None else ClipQuality.from_json(text)

    def content_digest(self) -> str:
        """``sha256:<hex>`` of the reference these snippets track: :func:`combine_clip_digests` of
        :meth:`clip_digests`. Equal digests mean equal reference data, whatever source or path gave them."""
        return combine_clip_digests(self.clip_digests())

    def clip_digests(self) -> dict[str, str]:
        """Each clip's sha256 (hex) over its ``dt`` and walker pose arrays as stored."""
        stat = self.hdf5_path.stat()
        key = (str(self.hdf5_path), stat.st_mtime_ns, stat.st_size)
        return {clip_id: _clip_digest(*key, clip_id) for clip_id in sorted(set(self.ids))}

    def clip_collection(self):
        """The dm_control ``ClipCollection`` of these snippets."""
        from dm_control.locomotion.tasks.reference_pose import types

        return types.ClipCollection(ids=self.ids, start_steps=self.start_steps, end_steps=self.end_steps)


@functools.lru_cache(maxsize=4096)
def _clip_digest(hdf5_path: str, mtime_ns: int, size: int, clip_id: str) -> str:
    """One clip's digest, once per file version (the file's modification time and size are in the key)."""
    with h5py.File(hdf5_path, "r") as h5:
        group = h5[clip_id]
        digest = hashlib.sha256(f"{clip_id} dt={float(group.attrs['dt'])!r}".encode())
        walker = group["walkers/walker_0"]
        for name in amc.WALKER_POSE_FIELDS:
            values = np.ascontiguousarray(walker[name][...])
            digest.update(f"\n{name} {values.dtype.str} {values.shape}\n".encode())
            digest.update(values.tobytes())
    return digest.hexdigest()


def combine_clip_digests(clip_digests: dict[str, str]) -> str:
    """``sha256:<hex>`` of several clips' digests (``{clip_id: hex}``), whatever order they come in."""
    lines = "".join(f"{clip_id} {digest}\n" for clip_id, digest in sorted(clip_digests.items()))
    return f"sha256:{hashlib.sha256(lines.encode()).hexdigest()}"


class MocapSource:
    """Base class: a place clips are read from."""

    description: str

    def available_clips(self) -> tuple[str, ...]:
        raise NotImplementedError

    def num_steps(self, clip_id: str) -> int:
        raise NotImplementedError

    def hdf5_for(self, clip_ids: Sequence[str]) -> Path:
        """An HDF5 file in dm_control's layout that holds at least these clips."""
        raise NotImplementedError

    def clip_set(self, clips: str | Sequence[str], skip_missing_clips: bool = False, strict: bool = False) -> ClipSet:
        """Resolves clip ids, snippet ids or collections against this source.

        Raises :class:`MocapSourceError` naming the source for unknown clips (with
        close ids), clips the source lacks and snippet bounds outside the clip; with
        ``strict=True`` also for snippets whose clip's quality report lists problems
        (broken steps count only inside the snippet's bounds).
        """
        snippets = resolve_snippets(clips)
        available = set(self.available_clips())
        missing = sorted({s.clip_id for s in snippets} - available)
        if missing and skip_missing_clips:
            snippets = [s for s in snippets if s.clip_id in available]
            if not snippets:
                raise MocapSourceError(f"none of the clips of {clips!r} is in {self.description}.")
        elif missing:
            from mocapact_envs.mocap.ids import dm_control_subset

            known = set(dm_control_subset("ALL"))
            first = missing[0]
            if first not in known and first not in available:
                hint = suggest(first, available | known)
                raise MocapSourceError(
                    f"unknown clip id {first!r}: it is neither in dm_control's cmu_subsets.ALL nor in "
                    f"{self.description}.{hint}"
                )
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise MocapSourceError(
                f"{self.description} lacks {len(missing)} requested clip(s): {shown}. It has "
                f"{len(available)} clips; pass skip_missing_clips=True to use only those, or point "
                f"{MOCAP_PATH_ENV} at a source that has them."
            )
        resolved = []
        for s in snippets:
            last_step = self.num_steps(s.clip_id) - 1
            end = last_step if s.end is None else s.end
            if s.start < 0 or end > last_step or s.start >= end:
                raise MocapSourceError(
                    f"snippet {s.id} is outside clip {s.clip_id}, whose steps in {self.description} "
                    f"run from 0 to {last_step}."
                )
            resolved.append(Snippet(s.clip_id, s.start, end))
        path = self.hdf5_for(sorted({s.clip_id for s in resolved}))
        clip_set = ClipSet(path, tuple(resolved))
        if strict:
            _refuse_implausible(clip_set)
        return clip_set


def _refuse_implausible(clip_set: ClipSet) -> None:
    refused = []
    for snippet in clip_set.snippets:
        quality = clip_set.quality(snippet.clip_id)
        problems = quality.problems_within(snippet.start, snippet.end) if quality else ()
        if problems:
            refused.append(f"{snippet.id} ({'; '.join(problems)})")
    if refused:
        shown = ", ".join(refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
        raise MocapSourceError(
            f"strict=True refuses {len(refused)} snippet(s) the conversion could not make plausible: {shown}. "
            "Choose snippets without those steps, or pass strict=False to track them anyway "
            "(`mocapact-convert --report` lists every clip's quality)."
        )


class HDF5Source(MocapSource):
    """A dm_control-format HDF5 file of reference trajectories."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        self.description = f"HDF5 file {self.path}"
        if not self.path.is_file():
            raise MocapSourceError(f"{self.description} does not exist.")
        try:
            with h5py.File(self.path, "r") as h5:
                self._num_steps = {}
                for key in h5.keys():
                    group = h5[key]
                    if not isinstance(group, h5py.Group) or "num_steps" not in group.attrs:
                        raise MocapSourceError(
                            f"{self.description} is not in dm_control's layout: top-level entry {key!r} "
                            "is not a clip group with a 'num_steps' attribute."
                        )
                    self._num_steps[key] = int(group.attrs["num_steps"])
                if not self._num_steps:
                    raise MocapSourceError(f"{self.description} holds no clips.")
                self._check_layout(h5, next(iter(self._num_steps)))
        except OSError as error:
            raise MocapSourceError(f"{self.description} cannot be read as HDF5: {error}") from error

    def _check_layout(self, h5: h5py.File, clip_id: str) -> None:
        group = h5[clip_id]
        missing = [name for name in ("dt",) if name not in group.attrs]
        walker = group.get("walkers/walker_0")
        if walker is None:
            missing.append("walkers/walker_0")
        else:
            missing += [f"walkers/walker_0/{f}" for f in amc.WALKER_POSE_FIELDS if f not in walker]
        if "props" not in group:
            missing.append("props")
        if missing:
            raise MocapSourceError(
                f"{self.description} is not in dm_control's layout: clip {clip_id!r} lacks {', '.join(missing)}."
            )

    def available_clips(self) -> tuple[str, ...]:
        return tuple(sorted(self._num_steps))

    def num_steps(self, clip_id: str) -> int:
        return self._num_steps[clip_id]

    def hdf5_for(self, clip_ids: Sequence[str]) -> Path:
        return self.path


class AMCFolderSource(MocapSource):
    """A folder of CMU ``.amc`` files, converted on first use and cached."""

    def __init__(self, folder: str | Path, dt: float = amc.DEFAULT_DT):
        self.folder = Path(folder).expanduser().resolve()
        self.dt = dt
        self.description = f"AMC folder {self.folder}"
        if not self.folder.is_dir():
            raise MocapSourceError(f"{self.description} does not exist.")
        if not self.files:
            raise MocapSourceError(f"{self.description} holds no .amc files named like 16_22.amc.")

    @cached_property
    def files(self) -> dict[str, Path]:
        files = {}
        for path in sorted(self.folder.rglob("*.amc")):
            clip_id = amc_file_clip_id(path)
            if clip_id is not None:
                files[clip_id] = path
        return files

    def available_clips(self) -> tuple[str, ...]:
        return tuple(sorted(self.files))

    def cached_clip_path(self, clip_id: str) -> Path:
        """Keyed by the clip's content, its subject's ASF skeleton (which sets the root scale), the
        step and the converter version."""
        amc_path = self.files[clip_id]
        asf_path = subject_asf_path(amc_path)
        digest = _sha256(amc_path)
        if asf_path.is_file():
            digest = hashlib.sha256(f"{digest} {_sha256(asf_path)}".encode()).hexdigest()
        digest = digest[:16]
        dt_ms = round(self.dt * 1000)
        return cache_dir() / "clips" / f"{clip_id}-{digest}-dt{dt_ms}ms-v{amc.CONVERTER_VERSION}.h5"

    def convert(self, clip_id: str) -> Path:
        """Converts one clip into the cache unless an up-to-date copy is there."""
        target = self.cached_clip_path(clip_id)
        if not target.exists():
            clip = amc.convert_amc(self.files[clip_id], clip_id, self.dt)
            atomic_h5_write(target, lambda h5: amc.write_clip(h5, clip))
        return target

    def num_steps(self, clip_id: str) -> int:
        with h5py.File(self.convert(clip_id), "r") as h5:
            return int(h5[clip_id].attrs["num_steps"])

    def hdf5_for(self, clip_ids: Sequence[str]) -> Path:
        """One file that links the cached clips, so dm_control can open them together."""
        clip_files = {c: self.convert(c) for c in clip_ids}
        key = hashlib.sha256("\n".join(f"{c}={p.name}" for c, p in sorted(clip_files.items())).encode())
        target = cache_dir() / "sets" / f"{key.hexdigest()[:24]}.h5"
        if not target.exists():

            def fill(h5: h5py.File) -> None:
                for clip_id, path in clip_files.items():
                    h5[clip_id] = h5py.ExternalLink(str(path), clip_id)

            atomic_h5_write(target, fill)
        return target


def _official_file() -> Path:
    """dm_control's official CMU 2020 file, if present or downloadable."""
    from dm_control.locomotion.mocap import cmu_mocap_data

    cached = cmu_mocap_data._get_cached_file_path("2020")
    if cached:
        return Path(cached)
    host = urllib.parse.urlparse(cmu_mocap_data.H5_URL["2020"]).hostname
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as error:
        raise MocapSourceError(
            f"no reference motion source: {MOCAP_PATH_ENV} is not set, dm_control's "
            f"{cmu_mocap_data.H5_FILENAME['2020']} is not cached, and it cannot be downloaded ({error}). "
            f"Set {MOCAP_PATH_ENV} (or pass mocap_path=) to a dm_control-format HDF5 file or to a folder of "
            "CMU .amc files, for example ../shared/cmu-mocap."
        ) from error
    return Path(cmu_mocap_data.get_path_for_cmu("2020"))


_SOURCES: dict[tuple[str, float], MocapSource] = {}


def get_source(mocap_path: str | Path | None = None) -> MocapSource:
    """The source named by ``mocap_path``, else ``MOCAPACT_MOCAP_PATH``, else dm_control's file."""
    chosen = mocap_path if mocap_path is not None else os.environ.get(MOCAP_PATH_ENV)
    path = Path(chosen).expanduser().resolve() if chosen else _official_file()
    key = (str(path), amc.DEFAULT_DT)
    if key not in _SOURCES:
        if path.is_dir():
            _SOURCES[key] = AMCFolderSource(path)
        elif path.exists():
            _SOURCES[key] = HDF5Source(path)
        else:
            raise MocapSourceError(
                f"mocap path {str(path)!r} does not exist; it must be a dm_control-format HDF5 file or a "
                "folder of CMU .amc files."
            )
    return _SOURCES[key]
