"""The mocap data layer on the real CMU clips: ids, conversion, caching, errors."""

import re
import shutil
import socket

import h5py
import numpy as np
import pytest
from dm_control.locomotion.mocap import loader
from tiny_runs import run

from mocapact_envs.mocap import source as source_module
from mocapact_envs.mocap.ids import Snippet, parse_snippet, read_id_file, resolve_snippets
from mocapact_envs.mocap.source import AMCFolderSource, HDF5Source, MocapSourceError, get_source
from mocapact_envs.mocap.trainable import plan_snippets


def test_parse_clip_and_snippet_ids():
    assert parse_snippet("CMU_016_22") == Snippet("CMU_016_22")
    assert parse_snippet("CMU_016_22-165-363") == Snippet("CMU_016_22", 165, 363)
    assert parse_snippet("CMU_016_22-165-363").id == "CMU_016_22-165-363"
    for bad in ("CMU_16_22", "cmu_016_22", "CMU_016_22-5", "CMU_016_22-9-3"):
        with pytest.raises(ValueError, match="CMU_016_22|ends"):
            parse_snippet(bad)


def test_collections_and_id_files(mocap_folder):
    assert len(resolve_snippets("ALL")) == 836
    assert len(resolve_snippets("WALK_TINY")) == 36
    snippets = resolve_snippets(str(mocap_folder / "clip_lists" / "mocapact_all_snippets.txt"))
    assert len(snippets) == 2589
    assert snippets[0] == Snippet("CMU_001_01", 0, 178)
    with pytest.raises(ValueError, match="GET_UP"):
        resolve_snippets("WALK_HUGE")


def test_id_file_without_final_newline_keeps_last_entry(mocap_folder):
    path = mocap_folder / "clip_lists" / "mocapact_val_clips.txt"
    text = path.read_text()
    assert not text.endswith("\n"), "this test needs a list without a final newline"
    ids = read_id_file(path)
    assert ids[-1] == text.split()[-1]
    assert len(ids) == text.count("\n") + 1


def test_every_shared_clip_converts_and_loads(mocap_folder, clips_table, tmp_path, monkeypatch):
    monkeypatch.setenv("MOCAPACT_CACHE_DIR", str(tmp_path / "cache"))
    source = AMCFolderSource(mocap_folder)
    assert set(source.available_clips()) == {row["clip"] for row in clips_table}
    clip_set = source.clip_set(list(source.available_clips()))
    trajectories = loader.HDF5TrajectoryLoader(str(clip_set.hdf5_path))
    for row in clips_table:
        clip_id, frames = row["clip"], int(row["frames_120hz"])
        num_steps = source.num_steps(clip_id)
        # 120 Hz frames resampled at 0.03 s: one step per 3.6 frames, both ends included.
        assert num_steps == int((frames - 1) / 3.6) + 1, clip_id
        if row["complete"] == "yes" and row["mocapact_len_steps"].isdigit():
            # The shared README: frames / 3.6 exceeds MoCapAct's length by 3.3 to 4.2 steps.
            assert 3.2 <= frames / 3.6 - int(row["mocapact_len_steps"]) <= 4.3, clip_id
        trajectory = trajectories.get_trajectory(clip_id, zero_out_velocities=False)
        features = trajectory.as_dict()
        assert features["walker/joints"].shape == (num_steps, 56)
        assert features["walker/body_positions"].shape == (num_steps, 31, 3)
        # The lowest body stays near the floor in a typical step: the V2020
        # rescaling of the root is right (raw mocap drifts a few cm either way).
        lowest_body_height = features["walker/body_positions"][:, :, 2].min(axis=1)
        assert -0.05 < np.median(lowest_body_height) < 0.2, clip_id


def test_conversion_cache_is_keyed_by_file_content(mocap_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MOCAPACT_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "amc"
    folder.mkdir()
    shutil.copy(mocap_folder / "subjects" / "16" / "16_22.amc", folder / "16_22.amc")
    first = AMCFolderSource(folder)
    path_before = first.convert("CMU_016_22")
    assert AMCFolderSource(folder).convert("CMU_016_22") == path_before
    # Drop the last frame: the clip must be converted again, one step shorter or equal.
    text = (folder / "16_22.amc").read_text().splitlines()
    last_frame = max(i for i, line in enumerate(text) if line.strip().isdigit())
    (folder / "16_22.amc").write_text("\n".join(text[:last_frame]) + "\n")
    changed = AMCFolderSource(folder)
    path_after = changed.convert("CMU_016_22")
    assert path_after != path_before
    with h5py.File(path_before) as old, h5py.File(path_after) as new:
        assert new["CMU_016_22"].attrs["num_steps"] <= old["CMU_016_22"].attrs["num_steps"]
        old_joints = old["CMU_016_22/walkers/walker_0/joints"][:]
        new_joints = new["CMU_016_22/walkers/walker_0/joints"][:]
        assert not np.array_equal(old_joints[:, -1], new_joints[:, -1])


def test_unknown_clip_names_source_and_suggests(mocap_folder):
    source = get_source(mocap_folder)
    with pytest.raises(MocapSourceError, match=r"unknown clip id 'CMU_016_99'.*Did you mean .*CMU_016_"):
        source.clip_set("CMU_016_99")
    # The source names its folder resolved (../shared may be a symbolic link).
    with pytest.raises(MocapSourceError, match=re.escape(str(mocap_folder.resolve()))):
        source.clip_set("CMU_999_99")


def test_clip_the_source_lacks(mocap_folder):
    source = get_source(mocap_folder)
    with pytest.raises(MocapSourceError, match="lacks 1 requested clip.*CMU_001_01"):
        source.clip_set("CMU_001_01")
    clip_set = source.clip_set("WALK_TINY", skip_missing_clips=True)
    assert {s.clip_id for s in clip_set.snippets} == {
        "CMU_016_22",
        "CMU_016_31",
        "CMU_016_32",
        "CMU_016_47",
        "CMU_016_58",
    }


def test_snippet_bounds_outside_clip(mocap_folder):
    source = get_source(mocap_folder)
    # The complete capture: 307 frames at 120 Hz resample to 86 steps of 0.03 s (MoCapAct's clip has 83).
    last = source.clip_set("CMU_016_22").snippets[0].end
    assert last == 85
    assert source.clip_set("CMU_016_22-0-82").snippets[0].end == 82
    assert source.clip_set(f"CMU_016_22-0-{last}").snippets[0].end == last
    with pytest.raises(MocapSourceError, match=f"outside clip CMU_016_22.*0 to {last}"):
        source.clip_set(f"CMU_016_22-0-{last + 1}")


def test_bad_hdf5_files(tmp_path):
    not_hdf5 = tmp_path / "clips.h5"
    not_hdf5.write_text("not an HDF5 file")
    with pytest.raises(MocapSourceError, match="cannot be read as HDF5"):
        HDF5Source(not_hdf5)
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as h5:
        h5.create_group("CMU_016_22").attrs["num_steps"] = 3
    with pytest.raises(MocapSourceError, match="lacks dt"):
        HDF5Source(wrong)
    with pytest.raises(MocapSourceError, match="does not exist"):
        get_source(tmp_path / "missing.h5")


def test_no_source_and_no_network(monkeypatch, tmp_path):
    monkeypatch.delenv("MOCAPACT_MOCAP_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no cached official file

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(MocapSourceError, match="MOCAPACT_MOCAP_PATH is not set.*cannot be downloaded"):
        source_module.get_source()


def test_hdf5_source_reads_converted_file(mocap_folder, tmp_path):
    output = tmp_path / "two_clips.h5"
    result = run("-m", "mocapact_envs.tools.convert_clips", mocap_folder, "--clips", "CMU_016_22", "CMU_009_12",
                 "--output", output)  # fmt: skip
    assert "CMU_009_12" in result.stdout and "2 clips converted" in result.stdout
    source = HDF5Source(output)
    assert source.available_clips() == ("CMU_009_12", "CMU_016_22")
    clip_set = source.clip_set(["CMU_009_12-0-198", "CMU_009_12-165-363"])
    assert clip_set.hdf5_path == output.resolve()
    assert clip_set.end_steps == (198, 363)


def test_cropping_plans_the_trainable_part_of_a_snippet(mocap_folder):
    # CMU_009_10's converted steps 0-1 are broken; CMU_016_22's converted clip ends at its last step.
    last = get_source(mocap_folder).clip_set("CMU_016_22").snippets[0].end
    planned = plan_snippets(["CMU_009_10-0-33", "CMU_016_22-0-60", "CMU_016_22-10-500"], crop=True)
    assert [(p.requested, p.snippet_id, p.cropped) for p in planned] == [
        ("CMU_009_10-0-33", "CMU_009_10-2-33", True),
        ("CMU_016_22-0-60", "CMU_016_22-0-60", False),
        ("CMU_016_22-10-500", f"CMU_016_22-10-{last}", True),
    ]
    with pytest.raises(ValueError, match=f"CMU_016_22-{last}-500: leaves fewer than 2 steps of CMU_016_22 to track"):
        plan_snippets([f"CMU_016_22-{last}-500"], crop=True)
    with pytest.raises(ValueError, match=f"CMU_016_22-10-500: runs past .* its trainable part is CMU_016_22-10-{last}"):
        plan_snippets(["CMU_016_22-0-60", "CMU_016_22-10-500"], crop=False)
