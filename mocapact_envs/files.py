"""Files written so that nothing is lost (a temporary name, then a rename), and read with errors naming the file.

A write that fails for want of space or permission raises :class:`OutputWriteError`,
which names the path and says which; folders are replaced whole with
:func:`replace_directory`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# torch loads on first use: `import mocapact_envs` needs only numpy and mujoco.
if TYPE_CHECKING:
    import torch


class OutputWriteError(OSError, ValueError):
    """A file could not be written: the disk is full or the folder is not writable. The message names
    the path. A ``ValueError`` too, so the command lines print it as they print any refused input."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, without OSError's "[Errno 28]"


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _errno_of(error: Exception) -> int | None:
    if getattr(error, "errno", None) is not None:
        return error.errno
    # h5py (HDF5) and safetensors (Rust) give the C library's errno only inside their messages:
    # "... errno = 28, ..." and "... (os error 28)".
    match = re.search(r"errno = (\d+)|\(os error (\d+)\)", str(error))
    return int(match.group(1) or match.group(2)) if match else None


def explain_write_error(path: str | Path, error: Exception) -> Exception:
    """``error`` as an :class:`OutputWriteError` naming ``path`` when the disk is full or the folder is
    not writable; any other error as it is."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    what = f"cannot write in {folder}" if folder == path else f"cannot write {path}"
    code = _errno_of(error)
    if code in _DISK_FULL:
        return OutputWriteError(
            code, f"{what}: the disk holding {folder} is full ({os.strerror(code)}). Free space, or write elsewhere."
        )
    if code in _NOT_WRITABLE:
        return OutputWriteError(
            code,
            f"{what}: the folder {folder} is not writable ({os.strerror(code)}). Choose a folder you can write to.",
        )
    return error


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turns an error of a full disk or an unwritable folder, raised while writing ``path``, into an
    :class:`OutputWriteError` naming it (tracebacks such as h5py's ``unexpected pos`` name neither).
    h5py closing a file on a full disk raises ``RuntimeError`` and safetensors its own error type, so every
    error is looked at: one without an errno of these passes unchanged."""
    try:
        yield
    except OutputWriteError:
        raise
    except Exception as error:
        explained = explain_write_error(path, error)
        if explained is error:
            raise
        raise explained from error


def check_writable_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Creates ``folder`` if needed and makes a file in it, so that a folder that is a file, read-only or
    on a read-only disk is refused by name before any work starts."""
    folder = Path(folder)
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise OutputWriteError(
            errno.ENOTDIR, f"{what} {folder} cannot be a folder: {blocking} is a file. Name a folder."
        )
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    return folder


def check_free_space(folder: str | Path, needed: int) -> None:
    """Refuses, before any work, to write ``needed`` bytes into ``folder`` when its disk has less free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OutputWriteError(
            errno.ENOSPC,
            f"cannot write in {folder}: that needs about {needed / 1e6:.1f} MB, and the disk holding it has "
            f"{free / 1e6:.1f} MB free. Free space, or write elsewhere.",
        )


def temporary_name(path: str | Path) -> Path:
    """Where :func:`replace_atomically` writes ``path`` first: hidden, this process's, the suffix kept last
    (writers that pick a format by extension, video or ``np.savez``, still work)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def remove_stale_temporaries(path: str | Path) -> None:
    """Deletes the temporary files that killed writers of ``path`` (any process) left behind."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.stem}.tmp-*{path.suffix}"):
        stale.unlink(missing_ok=True)


def replace_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """Writes through ``write(tmp_path)`` then renames, so a reader never sees half a file."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            write(tmp)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_directory(staged: str | Path, target: str | Path) -> None:
    """Moves the complete folder ``staged`` to ``target``, replacing the folder there, on one file system.

    A folder cannot be renamed over a non-empty one: the old folder first moves aside to a hidden
    sibling and is deleted once the new one is in place. If this process dies between the two
    renames, :func:`restore_replaced_directory` (called before the next replacement) puts it back.
    """
    staged, target = Path(staged), Path(target)
    aside = target.with_name(f".{target.name}.replaced-{os.getpid()}")
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            os.replace(target, aside)
        try:
            os.replace(staged, target)
        except BaseException:
            if aside.exists():
                os.replace(aside, target)
            raise
    shutil.rmtree(aside, ignore_errors=True)


def restore_replaced_directory(target: str | Path) -> None:
    """Undoes a :func:`replace_directory` that was killed between its renames: the old folder goes back to
    ``target`` if nothing took its place, else the leftover is deleted."""
    target = Path(target)
    for aside in sorted(target.parent.glob(f".{target.name}.replaced-*")):
        if target.exists():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(aside, target)


def tree_digest(folder: str | Path) -> str:
    """``sha256:<hex>`` over the relative names and contents of every file under ``folder`` (hidden ones,
    such as writers' temporaries, left out): equal digests mean the same saved files."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(f"{relative.as_posix()}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return f"sha256:{digest.hexdigest()}"


def write_json(path: str | Path, data: Any) -> None:
    """Writes JSON-serialisable ``data`` (indented, keys sorted) atomically."""
    replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def read_json(path: str | Path) -> Any:
    """The JSON value in ``path``; a file that is not JSON raises ``ValueError`` naming it and where it breaks."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the file is corrupt or truncated.") from error


def write_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor | np.ndarray]) -> None:
    """Saves tensors as safetensors (contiguous CPU copies), atomically."""
    import torch
    from safetensors.torch import save_file

    prepared = {
        name: (
            torch.from_numpy(np.ascontiguousarray(t)) if isinstance(t, np.ndarray) else t.detach().cpu().contiguous()
        )
        for name, t in tensors.items()
    }
    replace_atomically(path, lambda tmp: save_file(prepared, str(tmp)))


def read_tensors(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; an unreadable file raises ``ValueError`` naming it."""
    from safetensors.torch import load_file

    return _read_safetensors(path, lambda: load_file(str(path), device=device))


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file, as numpy; an unreadable file raises ``ValueError`` naming it."""
    from safetensors.numpy import load_file

    return _read_safetensors(path, lambda: load_file(str(path)))


def _read_safetensors(path: str | Path, load: Callable[[], dict]) -> dict:
    from safetensors import SafetensorError

    try:
        return load()
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}); it is corrupt or truncated.") from error
