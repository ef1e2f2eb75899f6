"""The fast tracking backend and its native vector env against dm_control's, on real CMU clips."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

import mocapact_envs  # noqa: F401  (registers the ids)
from mocapact_envs import MocapTrackingEnv
from mocapact_envs.envs.registration import tracking_env_id
from mocapact_envs.tasks.tracking_backend import TrackingBackend

pytestmark = pytest.mark.usefixtures("mocap_folder")

RTOL, ATOL = 1e-5, 1e-7  # ATOL only matters for values that are zero up to rounding.
PARITY_STEPS = 1_000  # per case, across many episode ends


def assert_same(fast, reference, what: str) -> None:
    if isinstance(reference, str):
        assert fast == reference, what
    else:
        np.testing.assert_allclose(fast, reference, rtol=RTOL, atol=ATOL, err_msg=what)


def assert_same_dict(fast: dict, reference: dict, what: str) -> None:
    assert list(fast) == list(reference), what
    for key in reference:
        assert_same(fast[key], reference[key], f"{what}: {key}")


def random_actions(seed: int, steps: int, scale: float = 0.1) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(0.0, scale, (steps, 56)), -1.0, 1.0)


PARITY_CASES = {
    # Expert observations, random starts, action noise.
    "time_index": dict(clips="CMU_016_22", observables="time_index", act_noise=0.1),
    # Multi-clip observations looking 1..5 steps ahead, from the snippet start, over a long clip.
    "multi_clip_start": dict(
        clips="CMU_009_12", observables="multi_clip", ref_steps=(1, 2, 3, 4, 5), random_start=False, act_noise=0.05
    ),
    # Everything rollouts log; late random starts on a short clip, so episodes also reach the end.
    "all_proprioceptive_truncations": dict(
        clips="CMU_002_03", observables="all_proprioceptive", ref_steps=(1, 2, 3, 4, 5), min_steps=2, act_noise=0.1
    ),
    # Several snippets (clip choice, clip_id, snippet_id) and another of dm_control's rewards.
    "several_clips": dict(
        clips=["CMU_016_22", "CMU_049_01-0-60", "CMU_002_03"],
        observables="multi_clip",
        ref_steps=(2, 4),
        reward_type="multi_term_pose_reward",
    ),
}


@pytest.mark.parametrize("case", PARITY_CASES)
def test_fast_backend_equals_dm_control(case: str) -> None:
    """Same seeds and actions: the same observations, rewards, episode ends and info, step for step."""
    settings = PARITY_CASES[case]
    reference = MocapTrackingEnv(backend="dm_control", **settings)
    fast = MocapTrackingEnv(backend="fast", **settings)
    assert fast.observation_space == reference.observation_space
    assert fast.action_space == reference.action_space
    seed = 7
    fast_reset, reference_reset = fast.reset(seed=seed), reference.reset(seed=seed)
    assert_same_dict(fast_reset[0], reference_reset[0], "reset observation")
    assert_same_dict(fast_reset[1], reference_reset[1], "reset info")
    ends = {"terminated": 0, "truncated": 0}
    snippets = {reference_reset[1]["snippet_index"]}
    for step, action in enumerate(random_actions(seed, PARITY_STEPS)):
        fast_step, reference_step = fast.step(action), reference.step(action)
        what = f"{case}, step {step}"
        assert_same_dict(fast_step[0], reference_step[0], f"{what}: observation")
        assert_same(fast_step[1], reference_step[1], f"{what}: reward")
        assert fast_step[2:4] == reference_step[2:4], f"{what}: terminated, truncated"
        assert_same_dict(fast_step[4], reference_step[4], f"{what}: info")
        if reference_step[2] or reference_step[3]:
            ends["terminated" if reference_step[2] else "truncated"] += 1
            fast_reset, reference_reset = fast.reset(), reference.reset()
            assert_same_dict(fast_reset[0], reference_reset[0], f"{what}: reset observation")
            assert_same_dict(fast_reset[1], reference_reset[1], f"{what}: reset info")
            snippets.add(reference_reset[1]["snippet_index"])
    # Both consumed dm_control's random state identically (starts and action noise).
    fast_state, reference_state = fast.random_state.get_state(), reference.random_state.get_state()
    assert np.array_equal(fast_state[1], reference_state[1]) and fast_state[2] == reference_state[2]
    assert ends["terminated"] > 5, ends
    if case == "all_proprioceptive_truncations":
        assert ends["truncated"] > 0, ends
    if case == "several_clips":
        assert len(snippets) == 3, snippets
    fast.close()
    reference.close()


def test_fast_model_is_dm_controls() -> None:
    """The fast backend simulates the very model dm_control compiles."""

    def saved(model: mujoco.MjModel) -> bytes:
        buffer = np.empty(mujoco.mj_sizeModel(model), np.uint8)
        mujoco.mj_saveModel(model, None, buffer)
        return buffer.tobytes()

    fast = MocapTrackingEnv("CMU_016_22", backend="fast")
    reference = MocapTrackingEnv("CMU_016_22", backend="dm_control")
    reference.reset(seed=0)
    assert saved(fast.unwrapped._dm_env.worlds.model) == saved(reference.physics.model.ptr)
    # Both speak the interface the env steps them through.
    assert isinstance(fast._dm_env, TrackingBackend) and isinstance(reference._dm_env, TrackingBackend)


def test_fast_backend_passes_gymnasium_checks() -> None:
    env = MocapTrackingEnv("CMU_016_22", observables="multi_clip", ref_steps=(1, 2), act_noise=0.1)
    assert env.backend == "fast"
    check_env(env.unwrapped, skip_render_check=True)


def test_registered_ids_default_to_fast_and_have_a_vector_entry_point() -> None:
    env = gym.make(tracking_env_id("CMU_016_22"))
    assert env.unwrapped.backend == "fast"
    assert gym.spec(tracking_env_id("CMU_016_22")).vector_entry_point is not None
    assert gym.spec("mocapact/MocapTracking-v0").vector_entry_point is not None
    env.close()


def test_vector_env_steps_n_single_envs_with_next_step_autoreset() -> None:
    num_envs, seed = 3, 11
    settings = dict(observables="multi_clip", ref_steps=(1, 3), act_noise=0.1)
    envs = gym.make_vec(
        tracking_env_id("CMU_016_22"), num_envs=num_envs, vectorization_mode="vector_entry_point", **settings
    )
    singles = [MocapTrackingEnv("CMU_016_22", **settings) for _ in range(num_envs)]
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.observation_space == batch_space(singles[0].observation_space, num_envs)
    assert envs.action_space == batch_space(singles[0].action_space, num_envs)

    observation, info = envs.reset(seed=seed)
    assert observation in envs.observation_space
    for world, env in enumerate(singles):
        single_observation, single_info = env.reset(seed=seed + world)
        assert_same_dict({k: v[world] for k, v in observation.items()}, single_observation, "reset")
        assert info["_snippet_index"][world] and info["snippet_index"][world] == single_info["snippet_index"]

    autoreset = np.zeros(num_envs, bool)
    autoresets = 0
    for step, actions in enumerate(random_actions(seed, 150).reshape(50, num_envs, 56)):
        observation, reward, terminated, truncated, info = envs.step(actions)
        assert observation in envs.observation_space
        assert reward.shape == terminated.shape == truncated.shape == (num_envs,)
        assert set(info) == {key for name in singles[0]._info() for key in (name, f"_{name}")}
        assert info["physics_state"].shape[0] == num_envs and info["_physics_state"].all()
        for world, env in enumerate(singles):
            what = f"step {step}, world {world}"
            if autoreset[world]:  # Next-step autoreset: this step only reset the world.
                single_observation, single_info = env.reset()
                assert reward[world] == 0 and not terminated[world] and not truncated[world], what
            else:
                single_observation, single_reward, single_terminated, single_truncated, single_info = env.step(
                    actions[world]
                )
                assert_same(reward[world], single_reward, what)
                assert (terminated[world], truncated[world]) == (single_terminated, single_truncated), what
            assert_same_dict({k: v[world] for k, v in observation.items()}, single_observation, what)
            assert_same_dict({k: info[k][world] for k in single_info}, single_info, what)
        autoresets += autoreset.sum()
        autoreset = terminated | truncated
    assert autoresets > 5

    # A partial reset leaves the other worlds' observations as they were.
    before = {key: value.copy() for key, value in observation.items()}
    mask = np.array([True, False, False])
    observation, info = envs.reset(options={"reset_mask": mask})
    assert info["_time_in_clip"].tolist() == mask.tolist()
    for key in before:
        np.testing.assert_array_equal(observation[key][1:], before[key][1:])
    envs.close()


def test_fast_backend_renders_the_reference_ghost_as_dm_control_does() -> None:
    frames = {}
    for backend in ("fast", "dm_control"):
        env = MocapTrackingEnv("CMU_016_22", backend=backend, render_mode="rgb_array", width=96, height=72)
        env.reset(seed=0)
        for action in random_actions(0, 4):  # The walker leaves the reference: the ghost shows beside it.
            env.step(action)
        frames[backend] = env.render()
        if backend == "fast":
            without_ghost = env.physics.render(height=72, width=96, camera_id=env.camera)
        env.close()
    frame = frames["fast"]
    assert frame.shape == (72, 96, 3) and frame.dtype == np.uint8 and frame.std() > 0
    assert np.abs(frame.astype(int) - without_ghost.astype(int)).sum() > 0
    assert np.abs(frame.astype(int) - frames["dm_control"].astype(int)).mean() < 1.0


def test_bad_arguments_name_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown backend 'numpy'.*fast, dm_control"):
        MocapTrackingEnv("CMU_016_22", backend="numpy")
    with pytest.raises(ValueError, match="unknown reward_type 'kinetic'.*comic"):
        MocapTrackingEnv("CMU_016_22", reward_type="kinetic")
    with pytest.raises(ValueError, match="backend 'fast' only, got 'dm_control'.*'sync'"):
        gym.make_vec(
            tracking_env_id("CMU_016_22"), num_envs=2, vectorization_mode="vector_entry_point", backend="dm_control"
        )
    with pytest.raises(
        ValueError, match=r"random_start must be a bool or 2 bools \(one per world\), got \(True, False, True\)"
    ):
        gym.make_vec(
            tracking_env_id("CMU_016_22"),
            num_envs=2,
            vectorization_mode="vector_entry_point",
            random_start=[True, False, True],
        )
    with pytest.raises(ValueError, match=r"random_start must be a bool or a sequence of bools .*got 'yes'"):
        MocapTrackingEnv("CMU_016_22", random_start="yes")


def test_pushes_give_the_walker_the_impulse_of_their_force_and_repeat_with_the_seed() -> None:
    """``set_pushes``: a pushed world's whole-body momentum changes by about force x time in the force's direction
    against an unpushed twin; the same seed pushes the same way; force 0 stops them; bad values are named."""
    from mocapact_envs.envs.factory import make_tracking_vec_env
    from mocapact_envs.tasks.reference_actions import ReferenceActions

    snippet, steps = "CMU_016_22-0-82", 4
    reference = ReferenceActions.for_snippet(snippet)

    def momentum_after(max_force: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        envs = make_tracking_vec_env(snippet, 2, "fast", random_start=False, observables="time_index")
        worlds = envs.unwrapped._worlds
        if max_force:
            envs.unwrapped.set_pushes(max_force, 1.0, steps)
        observation, _ = envs.reset(seed=seed)
        for _ in range(steps):
            observation, *_ = envs.step(reference.at(observation["walker/time_in_clip"]))
        forces = worlds._push_force.copy()
        root, momenta = worlds.layout.root_body, []
        for data in worlds.datas:
            mujoco.mj_subtreeVel(worlds.model, data)  # the root's subtree is the whole walker
            momenta.append(worlds.model.body_subtreemass[root] * data.subtree_linvel[root].copy())
        envs.close()
        return np.array(momenta), forces

    unpushed, no_force = momentum_after(0.0, seed=0)
    pushed, forces = momentum_after(400.0, seed=0)
    assert not no_force.any() and np.all(np.linalg.norm(forces[:, :2], axis=1) > 0) and not forces[:, 2].any()
    impulse = forces * steps * 0.03
    for world in range(2):
        change = pushed[world] - unpushed[world]
        horizontal = change[:2] @ impulse[world, :2] / np.linalg.norm(impulse[world, :2]) ** 2
        assert 0.9 < horizontal < 1.1, (change, impulse[world])  # ground friction takes or gives a little
    again, same_forces = momentum_after(400.0, seed=0)
    np.testing.assert_array_equal(again, pushed)
    np.testing.assert_array_equal(same_forces, forces)
    other_seed = momentum_after(400.0, seed=5)[1]
    assert not np.allclose(other_seed, forces)

    envs = make_tracking_vec_env(snippet, 1, "fast", observables="time_index")
    for arguments, named in (((-1.0, 0.1, 5), "max_force must be >= 0"), ((10.0, 1.5, 5), "probability must be")):
        with pytest.raises(ValueError, match=named):
            envs.unwrapped.set_pushes(*arguments)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        envs.unwrapped.set_pushes(10.0, 0.1, 0)
    envs.close()
