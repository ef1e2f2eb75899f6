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
from mocapact_envs.tasks.reference_actions import TIME_KEY
from mocapact_envs.training.trajectory_optimization import (
    SnippetProblem,
    ilqr,
    receding_horizon_plan,
    rollout,
)

SNIPPET = "CMU_016_22-0-82"


@pytest.fixture(scope="module")
def snippet_physics():
    problem = SnippetProblem.for_snippet(SNIPPET)
    return problem.step, problem.cost, problem.start


def test_control_step_is_the_tracking_envs_step(snippet_physics):
    """Actions played through ControlStep give the states the tracking env reaches with the same actions."""
    step, cost, start = snippet_physics
    actions = cost.reference_actions[:12]
    states, _ = rollout(step, start, actions)
    envs = make_eval_vec_env(SNIPPET, "eval_start", 1, backend="fast", observables=(TIME_KEY,), act_noise=0.0)
    envs.reset(seed=0)
    size = step.physics_size
    np.testing.assert_array_equal(envs.unwrapped.physics_states()[0], start[:size])
    for t, action in enumerate(actions):
        envs.step(action[None])
        # With the solver's warm start carried as the env carries it, bitwise the env's states.
        np.testing.assert_array_equal(envs.unwrapped.physics_states()[0], states[t + 1, :size])
    envs.close()


def test_ilqr_tracks_a_window_better_than_the_reference_actions(snippet_physics):
    """On 12 real steps iLQR more than halves the cost of the reference actions."""
    step, cost, start = snippet_physics
    reference = cost.reference_actions[:12]
    states, actions = rollout(step, start, reference)
    before = cost.total(states, actions, 0)
    result = ilqr(cost, start, reference.copy(), 0, iterations=6, tolerance=0.0)
    assert result.cost < 0.5 * before and result.iterations >= 2
    assert result.states.shape == (13, step.physics_size + step.nv) and result.gains.shape == (
        12,
        56,
        step.tangent_size,
    )


def test_chained_jacobians_predict_a_steps_change(snippet_physics):
    """The control step's Jacobians (six substeps chained) predict how a small change of the action and of the state
    (a turn of the root, a bent joint, a push) moves the state one step later."""
    import mujoco

    step, cost, start = snippet_physics
    action = np.clip(cost.reference_actions[5], -0.9, 0.9)  # away from the bounds, where MuJoCo clamps controls
    a, b = step.derivatives(start, action)
    nominal = step(start, action)
    change = np.zeros(56)
    change[[3, 20, 40]] = 1e-3
    predicted = b @ change
    actual = step.difference(step(start, action + change), nominal)
    np.testing.assert_allclose(actual, predicted, atol=0.02 * np.abs(predicted).max())
    tangent = np.zeros(step.tangent_size)
    tangent[[4, 10, 62 + 2]] = 1e-4  # the root's orientation, a hinge joint, the root's vertical velocity
    moved = start.copy()
    mujoco.mj_integratePos(step.model, moved[: step.nq], tangent[: step.nv], 1.0)
    moved[step.nq : step.nq + step.nv] += tangent[step.nv : 2 * step.nv]
    predicted = a @ tangent
    actual = step.difference(step(moved, action), nominal)
    np.testing.assert_allclose(actual, predicted, atol=0.02 * np.abs(predicted).max())


def test_a_plan_keeps_its_commit_steps_and_refuses_a_commit_longer_than_its_horizon(snippet_physics):
    step, cost, start = snippet_physics
    plan = receding_horizon_plan(cost, start, 9, horizon=6, commit=3, iterations=1)
    assert plan.actions.shape == (9, 56) and plan.states.shape == (10, start.size) and len(plan.window_costs) == 3
    # The kept states are what the kept actions give from the start (a step depends on its arguments only).
    np.testing.assert_array_equal(rollout(step, start, plan.actions)[0], plan.states)
    # On the plan the feedback adds nothing; off it, it acts.
    np.testing.assert_allclose(plan.feedback_action(step, plan.states[4], 4), np.clip(plan.actions[4], -1, 1))
    pushed = plan.states[4].copy()
    pushed[step.nq + 2] += 0.5  # the root's vertical velocity
    assert np.abs(plan.feedback_action(step, pushed, 4) - plan.actions[4]).max() > 1e-3
    with pytest.raises(ValueError, match=r"planning 500 needs 501"):
        receding_horizon_plan(cost, start, 500)
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
    replay = results["open_loop_plan"]
    # The replay in the environment is the plan, step for step.
    assert replay["max_state_gap_from_plan"] == 0.0 and replay["steps"] <= 20
    assert set(results["controllers"]) == {
        "reference actions, open loop", "plan's actions, open loop", "plan's actions + its feedback"
    }  # fmt: skip
    for row in results["controllers"].values():
        assert row["eval_rsi"]["episodes"] == 4 and 0 < row["eval_start"]["mean_norm_episode_length"] <= 1 + 1e-9
    assert (tmp_path / "tracking_error.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Frames 0-20: the env acts at steps 0 .. 19 and truncates at its last step, 20.
    assert len(np.load(tmp_path / "plan.npz")["actions"]) == 20
    # A second run reuses the plan, one of other settings plans again; bad values are one clear line each.
    offline = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def rerun(*flags: str):
        return subprocess.run(
            [*command, *flags], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=offline
        )

    again = rerun(*flags)
    assert again.returncode == 0 and "--replan to plan again" in again.stdout
    replanned = rerun(*flags[:6], "--iterations", "1", "--episodes", "1", "--out-dir", str(tmp_path))
    assert replanned.returncode == 0 and "'iterations': 2" in replanned.stdout and "planning again" in replanned.stdout
    bad = rerun("--snippet", "CMU_999_99")
    assert bad.returncode == 2 and "CMU_999_99" in bad.stderr
    zero = rerun("--horizon", "0")
    assert zero.returncode == 2 and "--horizon must be >= 1, got 0" in zero.stderr
