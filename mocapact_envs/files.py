"""Files written so that nothing is lost (a temporary name, then a rename), and read with errors naming the file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# torch loads on first use: `import mocapact_envs` needs only numpy and mujoco.
if TYPE_CHECKING:
    import torch


def replace_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """Writes through ``write(tmp_path)`` then renames, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix stays last: writers that pick a format by extension (video) still work.
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
