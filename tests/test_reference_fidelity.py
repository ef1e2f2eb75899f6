"""Converted clips stand on the floor: the retargeting and the quality report, on real clips."""

import json
import shutil
import tempfile

import numpy as np
import pytest
from dm_control.suite.utils import parse_amc
from tiny_runs import run

from mocapact_envs.envs.tracking import MocapTrackingEnv
from mocapact_envs.envs.tracking_vector import MocapTrackingVectorEnv
from mocapact_envs.mocap import amc, retarget
from mocapact_envs.mocap.source import AMCFolderSource, MocapSourceError
from mocapact_envs.mocap.trainable import plan_snippets

REPORT_FIELDS = {
    "root_scale",
    "root_scale_from",
    "height_offset_m",
    "height_offset_spread_m",
    "source_median_lowest_height_m",
    "source_deepest_penetration_m",
    "deepest_penetration_m",
    "penetrating_share",
    "median_lowest_height_m",
    "contact_share",
    "smoothing_half_width",
    "joint_range_violation",
    "worst_joint",
    "worst_joint_excess_rad",
    "broken_steps",
    "problems",
}


@pytest.fixture(scope="module")
def source(mocap_folder, tmp_path_factory):
    """The shared clips, converted into a cache of this module's own."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOCAPACT_CACHE_DIR", str(cache))
        yield AMCFolderSource(mocap_folder)


def unscaled_qpos(mocap_folder, relative_path: str) -> np.ndarray:
    """``parse_amc``'s own conversion of a file, before any retargeting: (steps, 63)."""
    with tempfile.NamedTemporaryFile("w", suffix=".amc") as tmp:
        tmp.write(amc._renumbered_amc_text(mocap_folder / "subjects" / relative_path))
        tmp.flush()
        converted = parse_amc.convert(tmp.name, amc._suite_physics(), amc.DEFAULT_DT)
    return np.asarray(converted.qpos).T


def test_no_unbroken_step_penetrates_the_floor_and_the_median_step_stands_on_it(source, clips_table):
    """The issue's bound, measured as a user would: the walker set to each step's features."""
    poser = amc.walker_poser()
    assert len(clips_table) == 96
    flagged = []
    for row in clips_table:
        clip_set = source.clip_set(row["clip"])
        quality = clip_set.quality(row["clip"])
        heights = poser.feature_lowest_points(clip_set.reference_features(0))
        unbroken = np.ones(len(heights), dtype=bool)
        unbroken[list(quality.broken_steps)] = False
        assert heights[unbroken].min() > -0.01, row["clip"]
        assert quality.deepest_penetration_m == pytest.approx(max(0.0, -heights[unbroken].min()), abs=1e-6)
        # Every shared clip shows ground contact, so its median step stands on the floor.
        assert quality.contact_share > retarget.MIN_CONTACT_SHARE, row["clip"]
        assert np.median(heights[unbroken]) <= 0.01, row["clip"]
        assert quality.median_lowest_height_m == pytest.approx(np.median(heights[unbroken]), abs=1e-6)
        if quality.problems:
            flagged.append(row["clip"])
    assert flagged == ["CMU_008_07", "CMU_009_10"]  # their broken steps; every other clip is made plausible


def test_motion_is_kept_joint_angles_identical_root_scaled_then_raised(mocap_folder, source):
    qpos = unscaled_qpos(mocap_folder, "16/16_22.amc")
    features = source.clip_set("CMU_016_22").reference_features(0)
    quality = source.clip_set("CMU_016_22").quality("CMU_016_22")
    np.testing.assert_array_equal(features["joints"], qpos[:, 7:])
    np.testing.assert_array_equal(features["quaternion"], qpos[:, 3:7])
    # The subject's ASF leg length sets the scale of the whole root translation.
    assert quality.root_scale_from == "leg length in 16.asf"
    expected_scale = amc.walker_poser().leg_length / retarget.asf_leg_length(mocap_folder / "subjects/16/16.asf")
    assert quality.root_scale == pytest.approx(expected_scale)
    np.testing.assert_allclose(features["position"][:, :2], quality.root_scale * qpos[:, :2], atol=1e-12)
    # The vertical change is the smooth correction: within its reported spread of its median.
    change = features["position"][:, 2] - quality.root_scale * qpos[:, 2]
    assert np.abs(change - quality.height_offset_m).max() <= quality.height_offset_spread_m + 1e-9
    assert np.abs(np.diff(change, 2)).max() < 0.01  # under 11 m/s^2 added at 0.03 s steps
    # The root velocity follows the corrected path (forward differences, as parse_amc takes them).
    np.testing.assert_allclose(np.diff(features["position"], axis=0) / amc.DEFAULT_DT, features["velocity"][:-1])


def test_a_running_clip_still_leaves_the_floor(source):
    clip_set = source.clip_set("CMU_009_02")
    heights = amc.walker_poser().feature_lowest_points(clip_set.reference_features(0))
    assert clip_set.quality("CMU_009_02").contact_share < 0.8  # flight steps were found
    assert heights.max() > 0.08


def test_broken_steps_of_cmu_009_10_are_flagged_and_strict_refuses_them(source, mocap_folder):
    quality = source.clip_set("CMU_009_10").quality("CMU_009_10")
    # The file starts with all-zero frames: the root sits at the origin, more than a metre below.
    assert quality.broken_steps == (0, 1)
    assert quality.problems == (
        "broken steps 0-1: a capture glitch (the root moves faster than 12 m/s, or the file holds one pose there)",
    )
    with pytest.raises(MocapSourceError, match=r"strict=True refuses 1 snippet.*CMU_009_10-0-36 \(broken steps 0-1"):
        source.clip_set("CMU_009_10", strict=True)
    # A snippet that leaves the broken steps out is plausible; without strict the whole clip is tracked.
    assert source.clip_set("CMU_009_10-2-36", strict=True).snippets[0].start == 2
    assert source.clip_set("CMU_009_10").ids == ("CMU_009_10",)
    with pytest.raises(MocapSourceError, match="CMU_009_10"):
        MocapTrackingEnv("CMU_009_10", mocap_path=mocap_folder, strict=True)
    with pytest.raises(MocapSourceError, match="CMU_009_10"):
        MocapTrackingVectorEnv(2, "CMU_009_10", mocap_path=mocap_folder, strict=True)


def test_a_held_pose_at_the_start_of_cmu_008_07_is_flagged_and_cropped_off(source, mocap_folder):
    text = amc._renumbered_amc_text(mocap_folder / "subjects/08/08_07.amc")
    assert amc.held_frames(text) == (302, 6, 1)  # the first 6 frames repeat one pose exactly
    quality = source.clip_set("CMU_008_07").quality("CMU_008_07")
    assert quality.broken_steps == (0, 1)
    # Why: the root barely moves from step 0 to 1, then jumps out of the hold faster than the run that follows.
    root = source.clip_set("CMU_008_07").reference_features(0)["position"]
    speed = np.linalg.norm(np.diff(root, axis=0), axis=1) / amc.DEFAULT_DT
    assert speed[0] < 0.5 and speed[1] > 1.5 * np.median(speed[2:40]) and speed[1] < retarget.MAX_ROOT_SPEED
    planned = plan_snippets(["CMU_008_07-0-80"], crop=True, mocap_path=str(mocap_folder))
    assert [(p.snippet_id, p.cropped) for p in planned] == [("CMU_008_07-2-80", True)]


def test_a_held_pose_at_the_end_of_a_file_flags_the_last_steps(mocap_folder, tmp_path):
    """16_22.amc with its last frame repeated 12 times (0.1 s): the steps from the last moving frame on are
    flagged, and only those."""
    text = amc._renumbered_amc_text(mocap_folder / "subjects/16/16_22.amc")
    frames, first, last = amc.held_frames(text)
    assert (first, last) == (1, 1)
    lines = text.splitlines()
    body = lines[lines.index(str(frames)) + 1 :]  # the last frame's channel lines
    held = text + "".join(f"{frames + i}\n" + "\n".join(body) + "\n" for i in range(1, 13))
    assert amc.held_frames(held) == (frames + 12, 1, 13)
    path = tmp_path / "16" / "16_22.amc"
    path.parent.mkdir()
    path.write_text(held)
    clip = amc.convert_amc(path, "CMU_016_22", asf_path=mocap_folder / "subjects/16/16.asf")
    steps = clip.num_steps
    flagged = retarget.held_steps(steps, amc.DEFAULT_DT, frames + 12, 1, 13, parse_amc.MOCAP_DT)
    assert clip.quality.broken_steps == tuple(np.flatnonzero(flagged))
    # The hold starts at the original last frame, (frames - 1) / 120 s: the steps after the one before it.
    assert clip.quality.broken_steps[0] == int(np.floor((frames - 2) / 120 / amc.DEFAULT_DT)) + 1
    assert clip.quality.broken_steps[-1] == steps - 1


def test_report_fields_in_cache_and_cli(mocap_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MOCAPACT_CACHE_DIR", str(tmp_path / "cache"))
    report_path = tmp_path / "report.json"
    result = run("-m", "mocapact_envs.tools.convert_clips", mocap_folder, "--clips", "CMU_016_22", "CMU_141_01",
                 "--report-json", report_path)  # fmt: skip
    assert "could not be made plausible" in result.stdout
    report = json.loads(report_path.read_text())
    assert set(report) == {"CMU_016_22", "CMU_141_01"}
    for fields in report.values():
        assert set(fields) == REPORT_FIELDS
    walking, no_asf = report["CMU_016_22"], report["CMU_141_01"]
    assert walking["problems"] == [] and walking["broken_steps"] == []
    assert 0.05 < walking["joint_range_violation"] < 0.12  # the shared README: 7 to 9 percent
    # Subject 141 has no ASF file: the default scale, and its clip was well below the floor before.
    assert no_asf["root_scale"] == retarget.DEFAULT_ROOT_SCALE
    assert no_asf["root_scale_from"] == "default (no ASF file)"
    assert no_asf["source_deepest_penetration_m"] > 0.05 > no_asf["deepest_penetration_m"]
    # The cache holds the same report.
    cached = AMCFolderSource(mocap_folder).clip_set("CMU_016_22").quality("CMU_016_22")
    assert json.loads(cached.to_json()) == walking


def test_cache_is_converted_again_when_the_converter_or_the_skeleton_changes(mocap_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MOCAPACT_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "amc"
    folder.mkdir()
    shutil.copy(mocap_folder / "subjects" / "16" / "16_22.amc", folder / "16_22.amc")
    shutil.copy(mocap_folder / "subjects" / "16" / "16.asf", folder / "16.asf")
    first = AMCFolderSource(folder).convert("CMU_016_22")
    assert f"-v{amc.CONVERTER_VERSION}.h5" in first.name
    monkeypatch.setattr(amc, "CONVERTER_VERSION", amc.CONVERTER_VERSION + 1)
    newer = AMCFolderSource(folder).convert("CMU_016_22")
    assert newer != first and newer.exists() and first.exists()
    # Longer femurs in the skeleton: a new cache entry with a smaller root scale.
    asf = folder / "16.asf"
    asf.write_text(
        asf.read_text().replace("length 7.03469", "length 8.03469").replace("length 7.12424", "length 8.12424")
    )
    longer_legs = AMCFolderSource(folder)
    refitted = longer_legs.convert("CMU_016_22")
    assert refitted != newer
    before = AMCFolderSource(mocap_folder).clip_set("CMU_016_22").quality("CMU_016_22").root_scale
    assert longer_legs.clip_set("CMU_016_22").quality("CMU_016_22").root_scale < before
