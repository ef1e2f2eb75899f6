"""Writing files so that nothing is lost: a temporary name, then a rename."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file


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


def write_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor | np.ndarray]) -> None:
    """Saves tensors as safetensors (contiguous CPU copies), atomically."""
    prepared = {
        name: (
            torch.from_numpy(np.ascontiguousarray(t)) if isinstance(t, np.ndarray) else t.detach().cpu().contiguous()
        )
        for name, t in tensors.items()
    }
    replace_atomically(path, lambda tmp: save_file(prepared, str(tmp)))


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))
