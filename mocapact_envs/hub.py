"""MoCapAct's published experts, policies and rollouts from Hugging Face (the ``mocapact-download`` command is
:mod:`mocapact_envs.tools.download`).

Each named choice is a set of files in ``microsoft/mocapact-models`` or the
dataset repo ``microsoft/mocapact-data``. Files are fetched one at a time into the
Hugging Face cache (``$HF_HOME/hub``; an interrupted download resumes there),
then each ``.tar.gz`` part is extracted into ``--local-dir`` (as ``tar -xzf`` run
there would, but refusing members that would land outside it or are special
files: tarfile's ``"data"`` filter) and other files are copied there. A finished
part leaves a marker under ``<local-dir>/.mocapact-download/``, so a rerun skips
it without downloading it again; ``--delete-archives`` frees each part's cached
archive once extracted (the large rollout dataset is hundreds of GB).

With ``HF_HUB_OFFLINE=1`` only files already in the cache are used.

``--convert`` then turns MoCapAct's multi-clip, GPT and transfer policies found in
``--local-dir`` (Lightning ``.ckpt`` files and SB3 zips, which need MoCapAct's code
and old libraries to unpickle) into this package's pickle-free policy folders under
``--converted-dir`` (default ``<local-dir>/converted``), read with allow-list
unpicklers: see :mod:`mocapact_envs.policies.mocapact_checkpoints`. Without names it
converts what an earlier download left there.

    mocapact-download experts-sample --local-dir data/
    mocapact-download rollouts-small --parts 1 --local-dir data/ --delete-archives
    mocapact-download multiclip gpt transfer --local-dir data/ --convert
    mocapact-download --list
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

MODELS_REPO = "microsoft/mocapact-models"
DATA_REPO = "microsoft/mocapact-data"
MARKER_DIR = ".mocapact-download"


@dataclass(frozen=True)
class Artefact:
    """A named download: files of one repo matching ``patterns``; ``{part}`` patterns are numbered parts."""

    repo_id: str
    repo_type: str
    patterns: tuple[str, ...]
    description: str

    @property
    def numbered(self) -> bool:
        return any("{part}" in p for p in self.patterns)

    def allow_patterns(self, parts: Sequence[int] | None = None) -> list[str]:
        """``fnmatch`` patterns of the files to fetch; ``parts`` picks numbered parts (all by default)."""
        if parts and not self.numbered:
            raise ValueError(f"--parts applies to numbered downloads only; {self.patterns[0]} is one file.")
        patterns = []
        for pattern in self.patterns:
            if "{part}" not in pattern:
                patterns.append(pattern)
            elif parts:
                patterns.extend(pattern.format(part=p) for p in parts)
            else:
                patterns.append(pattern.format(part="*"))
        return patterns


ARTEFACTS: dict[str, Artefact] = {
    "experts-sample": Artefact(MODELS_REPO, "model", ("sample/experts.tar.gz",), "a few clip experts"),
    "experts-all": Artefact(
        MODELS_REPO, "model", ("all/experts/experts_{part}.tar.gz",), "every clip expert, in parts 1..8"
    ),
    "gpt": Artefact(MODELS_REPO, "model", ("gpt.ckpt",), "the GPT motion-completion policy"),
    "multiclip": Artefact(MODELS_REPO, "model", ("multiclip_policy.tar.gz",), "the distilled multi-clip policies"),
    "transfer": Artefact(MODELS_REPO, "model", ("transfer.tar.gz",), "the transfer-task policies"),
    "rollouts-sample-small": Artefact(DATA_REPO, "dataset", ("sample/small.tar.gz",), "a sample of the small dataset"),
    "rollouts-sample-large": Artefact(DATA_REPO, "dataset", ("sample/large.tar.gz",), "a sample of the large dataset"),
    "rollouts-small": Artefact(
        DATA_REPO, "dataset", ("all/small/small_{part}.tar.gz",), "the small rollout dataset (10 + 10), parts 1..3"
    ),
    "rollouts-large": Artefact(
        DATA_REPO, "dataset", ("all/large/large_{part}.tar.gz",), "the large rollout dataset (100 + 100), in parts"
    ),
}


class DownloadError(RuntimeError):
    """A download that cannot proceed, with what to do about it."""


def artefact(name: str) -> Artefact:
    if name not in ARTEFACTS:
        raise ValueError(f"unknown download {name!r}; choose one of {', '.join(ARTEFACTS)}.")
    return ARTEFACTS[name]


def matching(paths: Sequence[str], patterns: Sequence[str]) -> list[str]:
    return sorted(p for p in paths if any(fnmatch.fnmatchcase(p, pattern) for pattern in patterns))


def _offline_hint(repo_id: str, patterns: Sequence[str]) -> str:
    from huggingface_hub import constants

    return (
        f"{repo_id} has no file matching {', '.join(map(repr, patterns))} in the Hugging Face cache "
        f"({constants.HF_HUB_CACHE}), and HF_HUB_OFFLINE=1 forbids downloading: unset HF_HUB_OFFLINE "
        "(or set it to 0) on a machine with network access, or fill that cache first."
    )


def list_files(item: Artefact, patterns: Sequence[str], revision: str = "main") -> list[str]:
    """The repo files matching ``patterns``: from the Hub, or from the cache when offline."""
    from huggingface_hub import HfApi, is_offline_mode, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    unreachable = None
    if not is_offline_mode():
        try:
            return matching(
                HfApi().list_repo_files(item.repo_id, repo_type=item.repo_type, revision=revision), patterns
            )
        except HfHubHTTPError as error:
            status = error.response.status_code if error.response is not None else 500
            if status < 500 and status != 429:  # not found, gated, bad revision: the cache would not help
                raise DownloadError(f"cannot list {item.repo_id}: {error}") from error
            unreachable = error
        except Exception as error:  # no connection (the HTTP client's error type varies by huggingface_hub version)
            unreachable = error
    try:
        snapshot = Path(
            snapshot_download(
                item.repo_id,
                repo_type=item.repo_type,
                revision=revision,
                allow_patterns=list(patterns),
                local_files_only=True,
            )  # fmt: skip
        )
        files = matching([p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()], patterns)
    except LocalEntryNotFoundError:
        files = []
    if not files:
        if unreachable is not None:
            raise DownloadError(
                f"cannot reach the Hugging Face Hub ({unreachable}) and the cache has no file of {item.repo_id} "
                f"matching {', '.join(map(repr, patterns))}."
            )
        raise DownloadError(_offline_hint(item.repo_id, patterns))
    return files


def marker_path(local_dir: Path, repo_id: str, filename: str) -> Path:
    return local_dir / MARKER_DIR / repo_id / f"{filename}.done"


def extract_archive(archive: Path, destination: Path, progress: Callable[[int], None] | None = None) -> int:
    """Extracts a ``.tar.gz`` into ``destination`` with tarfile's ``"data"`` filter; returns the member count.

    ``progress(n)`` gets the compressed bytes read, as the archive streams.
    """

    class CountingReader:
        def __init__(self, raw):
            self.raw = raw

        def read(self, size=-1):
            data = self.raw.read(size)
            if progress is not None:
                progress(len(data))
            return data

    destination.mkdir(parents=True, exist_ok=True)
    count = 0
    with archive.open("rb") as raw, tarfile.open(fileobj=CountingReader(raw), mode="r|gz") as tar:
        for member in tar:
            try:
                tar.extract(member, destination, filter="data")
            except tarfile.FilterError as error:
                raise DownloadError(f"{archive.name}: refusing unsafe member {member.name!r} ({error}).") from error
            count += 1
    return count


def _delete_cached(path: Path) -> None:
    """Removes a cached file (the blob a snapshot link points to, and the link)."""
    target = path.resolve()
    path.unlink(missing_ok=True)
    if target != path:
        target.unlink(missing_ok=True)


def download(
    names: Sequence[str],
    local_dir: str | Path,
    *,
    parts: Sequence[int] | None = None,
    revision: str = "main",
    delete_archives: bool = False,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Fetches and unpacks the named downloads into ``local_dir``; returns the marker files of finished parts."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    from tqdm.auto import tqdm

    local_dir = Path(local_dir).expanduser()
    items = [(name, artefact(name)) for name in names]
    done = []
    for name, item in items:
        patterns = item.allow_patterns(parts)
        files = list_files(item, patterns, revision)
        log(f"{name}: {len(files)} file(s) of {item.repo_id}: {', '.join(files)}")
        for filename in files:
            marker = marker_path(local_dir, item.repo_id, filename)
            if marker.exists():
                log(f"  {filename}: already unpacked, skipped")
                done.append(marker)
                continue
            try:
                cached = Path(hf_hub_download(item.repo_id, filename, repo_type=item.repo_type, revision=revision))
            except LocalEntryNotFoundError as error:
                raise DownloadError(_offline_hint(item.repo_id, [filename])) from error
            size = cached.stat().st_size
            if filename.endswith((".tar.gz", ".tgz")):
                with tqdm(total=size, unit="B", unit_scale=True, desc=f"Extracting {filename}") as bar:
                    members = extract_archive(cached, local_dir, bar.update)
                summary = {"extracted_members": members}
            else:
                target = local_dir / filename
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cached, target)
                summary = {"copied_to": str(target.relative_to(local_dir))}
            marker.parent.mkdir(parents=True, exist_ok=True)
            tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"repo_id": item.repo_id, "file": filename, "bytes": size, **summary}) + "\n")
            os.replace(tmp, marker)
            if delete_archives:
                _delete_cached(cached)
            done.append(marker)
    return done
