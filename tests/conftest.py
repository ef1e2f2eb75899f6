"""Test settings: real clips from ../shared/cmu-mocap, offline, offscreen."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MOCAP = REPO_ROOT.parent / "shared" / "cmu-mocap"

os.environ.setdefault("MOCAPACT_MOCAP_PATH", str(SHARED_MOCAP))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["HF_HUB_OFFLINE"] = "1"  # a hub call otherwise takes ~24 s to fail here


@pytest.fixture(scope="session")
def mocap_folder() -> Path:
    path = Path(os.environ["MOCAPACT_MOCAP_PATH"])
    if not (path / "subjects").is_dir():
        pytest.fail(f"real CMU clips are needed at {path} (set MOCAPACT_MOCAP_PATH)")
    return path


@pytest.fixture(scope="session")
def clips_table(mocap_folder) -> list[dict[str, str]]:
    """Rows of clips.tsv: the facts about each clip in the shared folder."""
    lines = (mocap_folder / "clips.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:] if line.strip()]


# Session-wide: tiny experts trained with the real trainer, and their rollouts.
from tiny_runs import experts_root, rollouts, shipped_expert_rollouts  # noqa: E402, F401
