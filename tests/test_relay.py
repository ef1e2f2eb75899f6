"""Relay experts: windows planned over a long snippet, trained together by train.py, composed and used as one expert."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from tiny_runs import REPO_ROOT, TRAIN, run

import mocapact_envs
from mocapact_envs.envs.factory import make_tracking_env
from mocapact_envs.mocap.ids import parse_snippet
from mocapact_envs.policies.relay import RelayExpert, plan_relay
from mocapact_envs.policies.run_layout import find_experts

EVALUATE = REPO_ROOT / "baselines" / "ppo_expert" / "evaluate.py"
SNIPPET = "CMU_009_12-0-100"  # 101 steps of a real run: four 40-step windows
TINY_RELAY = [
    "--clips", SNIPPET, "--relay-window-steps", "40", "--relay-overlap-steps", "10", "--seed", "0",
    "--num-envs", "1", "--num-steps", "64", "--minibatch-size", "64", "--update-epochs", "1",
    "--policy-hidden-sizes", "32", "32", "--value-hidden-sizes", "32", "32", "--total-timesteps", "256",
    "--eval-every-steps", "100000", "--eval-rsi-episodes", "2", "--eval-start-episodes", "1", "--eval-num-envs", "1",
    "--no-progress-bar",
]  # fmt: skip

pytestmark = pytest.mark.xdist_group("ppo_expert")


@pytest.mark.parametrize(
    ("snippet_id", "window", "overlap"),
    [
        ("CMU_009_12-0-198", 60, 20),
        ("CMU_009_12-0-100", 40, 10),
        ("CMU_008_04-0-131", 50, 25),
        ("CMU_009_12-5-9", 3, 1),
    ],
)
def test_windows_cover_the_snippet_and_each_switch_falls_inside_both_neighbours(snippet_id, window, overlap):
    snippet = parse_snippet(snippet_id)
    plan = plan_relay(snippet, window, overlap)
    assert plan.windows[0].start == snippet.start and plan.windows[-1].end == snippet.end
    assert all(w.end - w.start + 1 == window for w in plan.windows)
    for previous, following, switch in zip(plan.windows, plan.windows[1:], plan.switch_steps[1:], strict=False):
        assert previous.end - following.start + 1 >= overlap
        assert following.start <= switch <= previous.end
    # Every step of the snippet is acted on by a window that covers it.
    steps = np.arange(snippet.start, snippet.end + 1)
    acting = plan.window_index(steps)
    starts = np.array([plan.windows[k].start for k in acting])
    ends = np.array([plan.windows[k].end for k in acting])
    assert np.all((starts <= steps) & (steps <= ends))


def test_a_snippet_within_one_window_is_one_window_and_bad_windows_are_refused():
    plan = plan_relay(parse_snippet("CMU_016_22-0-40"), 60, 20)
    assert [w.id for w in plan.windows] == ["CMU_016_22-0-40"] and plan.switch_steps == (0,)
    with pytest.raises(ValueError, match=r"overlap_steps < window_steps; got window_steps=20, overlap_steps=20"):
        plan_relay(parse_snippet("CMU_009_12-0-198"), 20, 20)


@pytest.fixture(scope="module")
def relay_run(tmp_path_factory) -> Path:
    log_root = tmp_path_factory.mktemp("relay")
    result = run(TRAIN, *TINY_RELAY, "--log-root", log_root, "--relay-curve-steps", "100")
    assert "a relay of 4 windows" in result.stdout and "relay of 4 windows composed" in result.stdout
    return log_root / SNIPPET / "0"


def test_a_relay_trains_end_to_end_and_resumes_without_training_again(relay_run):
    config = json.loads((relay_run / "eval_rsi" / "model" / "config.json").read_text())
    assert config["snippet_id"] == SNIPPET and len(config["windows"]) == 4
    assert [w["from_step"] for w in config["windows"]] == list(plan_relay(parse_snippet(SNIPPET), 40, 10).switch_steps)
    (record,) = json.loads((relay_run / "evaluations.json").read_text())
    assert record["global_step"] >= 4 * 64 and {"eval_rsi", "eval_start"} <= set(record)
    (point,) = json.loads((relay_run / "relay_curve.json").read_text())
    assert point["mark"] == 100 and point["relay_steps"] >= 100 and "eval_rsi" in point
    again = run(TRAIN, *TINY_RELAY, "--log-root", relay_run.parents[1])
    assert again.stdout.count("nothing to do") == 4 and "composed" in again.stdout


def test_the_relay_acts_with_the_window_of_each_step_in_that_windows_time(relay_run):
    relay = mocapact_envs.load_expert(relay_run)
    assert isinstance(relay, RelayExpert) and relay.snippet_id == SNIPPET
    windows = relay.plan.windows
    env = make_tracking_env(SNIPPET, observables="time_index", random_start=False)
    observation, _ = env.reset(seed=0)
    env.close()
    for step in (0, relay.plan.switch_steps[1] - 1, relay.plan.switch_steps[1], 100):
        at_step = dict(observation) | {"walker/time_in_clip": np.array([step / 100], np.float32)}
        k = int(relay.plan.window_index(np.array([step]))[0])
        local = dict(at_step) | {
            "walker/time_in_clip": np.array(
                [(step - windows[k].start) / (windows[k].end - windows[k].start)], np.float32
            )
        }
        expected, _ = relay.experts[k].predict(local)
        action, _ = relay.predict(at_step)
        np.testing.assert_allclose(action, expected, atol=1e-6)
        assert relay.value(at_step) == pytest.approx(relay.experts[k].value(local), abs=1e-5)
    # A batch gives each row its own window's action.
    batch = {key: np.stack([value, value]) for key, value in observation.items()}
    batch["walker/time_in_clip"] = np.array([[0.0], [1.0]], np.float32)
    actions, _ = relay.predict(batch)
    np.testing.assert_allclose(actions[1], relay.predict({k: v[1] for k, v in batch.items()})[0], atol=1e-6)
    assert not np.allclose(actions[0], actions[1])


def test_a_relay_is_one_expert_to_searches_evaluation_and_collection(relay_run, tmp_path):
    search = find_experts([relay_run.parents[1]])
    assert [r.snippet.id for runs in search.runs_by_clip.values() for r in runs] == [SNIPPET]
    out = tmp_path / "evaluation"
    run(
        EVALUATE,
        relay_run,
        "--rsi-episodes",
        "3",
        "--start-episodes",
        "2",
        "--num-envs",
        "1",
        "--no-video",
        "--out-dir",
        out,
    )
    evaluation = json.loads(next(out.glob("*.json")).read_text())
    assert SNIPPET in json.dumps(evaluation)
    output = tmp_path / "rollouts"
    args = ["--n-start-rollouts", "1", "--n-rsi-rollouts", "1", "--output-dir", output, "--workers", "1"]
    run("-m", "mocapact_envs.tools.collect", relay_run.parents[1], *args)
    with h5py.File(output / "CMU_009_12.hdf5", "r") as h5:
        assert h5[f"{SNIPPET}/0/actions"].shape[1] == 56
        assert np.isfinite(h5[f"{SNIPPET}/0/values"][...]).all()


def test_a_relay_exports_into_a_zoo_compactly_and_loads_from_it(relay_run, tmp_path):
    from mocapact_envs.tools.zoo import export_expert

    exported = export_expert(relay_run, tmp_path / "zoo")
    assert exported.storage["actor_mean"] in ("float16", "float32") and exported.max_action_deviation <= 1e-3
    relay = mocapact_envs.load_expert(tmp_path / "zoo", SNIPPET)
    assert isinstance(relay, RelayExpert) and len(relay.experts) == 4
    original = mocapact_envs.load_expert(relay_run)
    env = make_tracking_env(SNIPPET, observables="time_index", random_start=False)
    observation, _ = env.reset(seed=1)
    env.close()
    np.testing.assert_allclose(relay.predict(observation)[0], original.predict(observation)[0], atol=1e-3)
    stored = json.loads((tmp_path / "zoo" / "experts" / SNIPPET / "0" / "clip_info.json").read_text())["zoo"]
    assert stored["weights"]["critic"] == "int8" and not stored["cropped"]


def test_a_world_starts_from_a_handed_over_state_at_its_step():
    from mocapact_envs.envs.factory import make_tracking_vec_env

    walker = make_tracking_vec_env(SNIPPET, 1, "fast", random_start=False, observables="time_index")
    walker.reset(seed=0)
    for _ in range(7):  # seven steps of small actions: a state off the reference
        _, _, _, _, info = walker.step(np.full((1, 56), 0.05, np.float32))
    state, step = np.array(info["physics_state"][0]), 7
    walker.close()
    envs = make_tracking_vec_env(SNIPPET, 2, "fast", random_start=True, observables="time_index", min_steps=10)
    envs.unwrapped.set_start_states(np.array([step]), state[None], probability=1.0)
    _, info = envs.reset(seed=3)
    np.testing.assert_allclose(info["physics_state"], np.stack([state, state]))
    np.testing.assert_allclose(info["time_in_clip"], step / 100)
    with pytest.raises(ValueError, match=r"start steps must lie in \[0, "):
        envs.unwrapped.set_start_states(np.array([500]), state[None], probability=1.0)
    envs.close()


def test_handover_relay_trains_its_windows_one_after_another(tmp_path):
    result = run(TRAIN, *TINY_RELAY, "--log-root", tmp_path, "--relay-handover-probability", "0.5", "--num-envs", "2")
    assert result.stdout.count("handover states from") == 3 and "relay of 4 windows composed" in result.stdout
    # A window stopped before its budget hands nothing over: its successor waits for the rerun.
    stopped = run(TRAIN, *TINY_RELAY, "--log-root", tmp_path / "stopped", "--relay-handover-probability", "0.5",
                  "--max-minutes", "0.000001")  # fmt: skip
    assert "CMU_009_12-0-39: not finished; the same command resumes it." in stopped.stdout
    assert "handover states from" not in stopped.stdout
    bad = run(TRAIN, *TINY_RELAY, "--log-root", tmp_path, "--relay-handover-probability", "1.5", check=False)
    assert bad.returncode == 2 and "--relay-handover-probability 1.5: must be in [0, 1]" in bad.stderr


def test_warm_started_windows_begin_from_their_predecessor(tmp_path):
    import torch

    result = run(
        TRAIN, *TINY_RELAY, "--log-root", tmp_path, "--relay-handover-probability", "0.5", "--relay-warm-start"
    )
    assert "relay of 4 windows composed" in result.stdout
    windows = tmp_path / SNIPPET / "0" / "relay_windows"
    first, second = (torch.load(windows / w / "0" / "checkpoint" / "state.pt", weights_only=True)
                     for w in ("CMU_009_12-0-39", "CMU_009_12-20-59"))  # fmt: skip
    # The second window's running observation statistics went on from the first's...
    # (each window trains as many steps: alone, the second would count as many as the first).
    assert second["obs_rms"]["count"].item() > 1.9 * first["obs_rms"]["count"].item() > 0
    # ...and without the predecessor's state it is refused up front, naming what it needs.
    bad = run(TRAIN, *TINY_RELAY, "--log-root", tmp_path / "bad", "--relay-warm-start", check=False)
    assert bad.returncode == 2 and "--relay-warm-start" in bad.stderr and "--relay-handover-probability" in bad.stderr
