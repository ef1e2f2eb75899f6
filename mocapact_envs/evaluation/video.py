"""Videos of episodes: mp4 files written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mocapact_envs.extras import needs_extra
from mocapact_envs.files import replace_atomically


@needs_extra("write_video")
def write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Writes an mp4 under a temporary name, then renames it into place (the ``[video]`` extra: imageio, ffmpeg)."""
    import imageio.v2 as imageio

    replace_atomically(path, lambda tmp: imageio.mimwrite(tmp, frames, fps=fps, macro_block_size=8))
