"""Trajectory optimisation on the tracking task's own physics (``mocapact_envs.training.trajectory_optimization``)
and ``baselines/ppo_expert/feedforward.py``, on a real clip."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

from mocapact_envs.evaluation.protocol import make_eval_vec_env
from mocapact_envs.tasks.fast_tracking.worlds import TrackingWorlds
from mocapact_envs.tasks.reference_actions import TIME_KEY, ReferenceActions
from mocapact_envs.tasks.tracking_settings import TrackingSettings, load_clip_set
from mocapact_envs.training.trajectory_optimization import (
    ControlStep,
    TrackingCost,
    ilqr,
    receding_horizon_plan,
    rollout,
)

SNIPPET = "CMU_016_22-0-82"


@pytest.fixture(scope="module")
def snippet_physics():
    worlds = TrackingWorlds(
        load_clip_set(SNIPPET), (TIME_KEY,), TrackingSettings(random_start=False), num_worlds=1, seed=0
    )
    worlds.reset((0,))
    worlds.evaluate(with_reward=False)
    start = worlds.physics_states()[0].copy()
    step = ControlStep(worlds.dynamics_model, worlds.num_substeps)
    qpos, qvel = worlds.reference_trajectory()
    reference_actions = ReferenceActions.for_snippet(SNIPPET).actions.astype(np.float64)
    yield step, TrackingCost(step, qpos, qvel, reference_actions), start
    worlds.close()


def test_control_step_is_the_tracking_envs_step(snippet_physics):
    """Actions played through ControlStep give the states the tracking env reaches with the same actions."""
    step, cost, start = snippet_physics
    actions = cost.reference_actions[:12]
    states, _ = rollout(step, start, actions)
    envs = make_eval_vec_env(SNIPPET, "eval_start", 1, backend="fast", observables=(TIME_KEY,), act_noise=0.0)
    envs.reset(seed=0)
    np.testing.assert_array_equal(envs.unwrapped.physics_states()[0], start)
    for t, action in enumerate(actions):
        envs.step(action[None])
        # The solver's warm start is not part of the state: equal to float noise, not bitwise.
        np.testing.assert_allclose(envs.unwrapped.physics_states()[0], states[t + 1], atol=1e-6)
    envs.close()


def test_ilqr_tracks_a_window_better_than_the_reference_actions(snippet_physics):
    """On 12 real steps iLQR more than halves the cost of the reference actions, and the chained finite-difference
    Jacobians predict a small change of the action."""
    step, cost, start = snippet_physics
    reference = cost.reference_actions[:12]
    states, actions = rollout(step, start, reference)
    before = cost.total(states, actions, 0)
    result = ilqr(cost, start, reference.copy(), 0, iterations=6, tolerance=0.0)
    assert result.cost < 0.5 * before and result.iterations >= 2
    assert result.states.shape == (13, start.size) and result.gains.shape == (12, 56, step.tangent_size)
    a, b = step.derivatives(start, reference[0])
    change = np.zeros(56)
    change[[3, 20, 40]] = 1e-3
    predicted = b @ change
    actual = step.difference(step(start, reference[0] + change), step(start, reference[0]))
    np.testing.assert_allclose(actual, predicted, atol=0.02 * np.abs(predicted).max())
    assert a.shape == (step.tangent_size, step.tangent_size)


def test_a_plan_keeps_its_commit_steps_and_refuses_a_commit_longer_than_its_horizon(snippet_physics):
    step, cost, start = snippet_physics
    plan = receding_horizon_plan(cost, start, 9, horizon=6, commit=3, iterations=1)
    assert plan.actions.shape == (9, 56) and plan.states.shape == (10, start.size) and len(plan.window_costs) == 3
    # The kept states are what the kept actions give from the start.
    np.testing.assert_allclose(rollout(step, start, plan.actions)[0], plan.states, atol=1e-9)
    with pytest.raises(ValueError, match=r"commit must be in \[1, horizon=6\], got 7"):
        receding_horizon_plan(cost, start, 9, horizon=6, commit=7)


def test_feedforward_script_plans_replays_and_measures_a_snippet(tmp_path):
    """The script as a user runs it, on a 20-step snippet of a real clip with a tiny planning budget."""
    command = [sys.executable, str(REPO_ROOT / "baselines" / "ppo_expert" / "feedforward.py")]
    flags = ["--snippet", "CMU_016_22-0-20", "--horizon", "8", "--commit", "5", "--iterations", "2"]
    flags += ["--episodes", "4", "--out-dir", str(tmp_path)]
    result = subprocess.run(
        [*command, *flags], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["snippet"] == "CMU_016_22-0-20"
    held = results["open_loop_plan"]["steps_held"]
    assert (
        0 < held and results["open_loop_plan"]["max_tracking_error"] >= results["open_loop_plan"]["mean_tracking_error"]
    )
    assert set(results["controllers"]) == {
        "reference actions, open loop", "plan's actions, open loop", "plan's actions + its feedback"
    }  # fmt: skip
    for row in results["controllers"].values():
        assert row["eval_rsi"]["episodes"] == 4 and 0 < row["eval_start"]["mean_norm_episode_length"] <= 1 + 1e-9
    assert (tmp_path / "tracking_error.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = np.load(tmp_path / "plan.npz")
    assert saved["actions"].shape[1] == 56 and len(saved["states"]) == len(saved["actions"]) + 1
    # A second run reuses the plan; a bad snippet id is one clear line.
    again = subprocess.run([*command, *flags], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "--replan to plan again" in again.stdout
    bad = subprocess.run([*command, "--snippet", "CMU_999_99"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "CMU_999_99" in bad.stderr
