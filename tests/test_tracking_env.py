"""The tracking environment on real clips, against dm_control's task built directly."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import mocapact_envs
from mocapact_envs.evaluation.metrics import EpisodeTracker
from mocapact_envs.tasks.observables import resolve_observables

EXPECTED_SIZES = {
    ("base", (1, 2, 3, 4, 5)): 205,
    ("time_index", (0,)): 206,
    ("high_level_sans_reference", (1, 2, 3, 4, 5)): 206,
    ("high_level", (1, 2, 3, 4, 5)): 1291,
    ("cmu_humanoid", (1, 2, 3, 4, 5)): 224,
    ("multi_clip_sans_id", (1, 2, 3, 4, 5)): 2847,
    ("multi_clip_sans_id", (0,)): 799,
    ("all_proprioceptive", (1, 2, 3, 4, 5)): 2868,
}


def small_random_actions(seed: int, steps: int) -> np.ndarray:
    """Actions near the standing targets, so episodes last more than a few steps."""
    return np.clip(np.random.default_rng(seed).normal(0.0, 0.1, (steps, 56)), -1, 1).astype(np.float32)


def test_registered_clip_env_passes_check_env():
    env = gym.make("mocapact/MocapTracking-CMU_016_22-v0")
    check_env(env.unwrapped, skip_render_check=True)
    assert env.spec.max_episode_steps is None
    # A clip id names the whole converted clip: the complete capture's 307 frames give steps 0 to 85.
    assert env.unwrapped.clip_set.snippets[0].id == "CMU_016_22-0-85"


def test_generic_env_on_collection_passes_check_env(mocap_folder):
    env = gym.make("mocapact/MocapTracking-v0", clips="WALK_TINY", skip_missing_clips=True)
    check_env(env.unwrapped, skip_render_check=True)
    snippet_ids = set()
    for seed in range(12):
        _, info = env.reset(seed=seed)
        snippet_ids.add(env.unwrapped.snippet_ids[info["snippet_index"]])
        assert env.unwrapped.snippet_id == env.unwrapped.snippet_ids[info["snippet_index"]]
    assert len(snippet_ids) >= 3, snippet_ids


def test_module_prefixed_id_works():
    env = gym.make("mocapact_envs:mocapact/MocapTracking-CMU_009_12-v0")
    assert env.observation_space["walker/time_in_clip"].shape == (1,)


@pytest.mark.parametrize(("observables", "ref_steps"), list(EXPECTED_SIZES))
def test_observation_sizes(observables, ref_steps):
    env = mocapact_envs.MocapTrackingEnv("CMU_016_22", observables=observables, ref_steps=ref_steps)
    observation, _ = env.reset(seed=0)
    size = sum(v.size for v in observation.values())
    assert size == EXPECTED_SIZES[(observables, ref_steps)]
    assert sum(int(np.prod(s.shape)) for s in env.observation_space.values()) == size
    assert list(observation) == sorted(observation), "keys must be in alphabetical order"
    assert observation in env.observation_space


def test_unknown_names_give_clear_errors():
    with pytest.raises(ValueError, match="unknown observation set 'timeindex'.*time_index"):
        mocapact_envs.MocapTrackingEnv("CMU_016_22", observables="timeindex")
    with pytest.raises(ValueError, match="unknown backend 'mjx'.*dm_control"):
        mocapact_envs.MocapTrackingEnv("CMU_016_22", backend="mjx")
    with pytest.raises(ValueError, match="unknown render_mode 'rgb'.*'rgb_array'"):
        mocapact_envs.MocapTrackingEnv("CMU_016_22", render_mode="rgb")


def _direct_dm_control_env(clip_set, observable_keys, ref_steps, seed):
    """dm_control's MultiClipMocapTracking built directly, as MoCapAct builds it."""
    from dm_control import composer
    from dm_control.locomotion.arenas import floors
    from dm_control.locomotion.tasks.reference_pose import tracking, types
    from dm_control.locomotion.walkers import cmu_humanoid

    task = tracking.MultiClipMocapTracking(
        walker=cmu_humanoid.CMUHumanoidPositionControlledV2020,
        arena=floors.Floor(),
        ref_path=str(clip_set.hdf5_path),
        ref_steps=ref_steps,
        dataset=types.ClipCollection(ids=clip_set.ids, start_steps=clip_set.start_steps, end_steps=clip_set.end_steps),
        min_steps=10,
        reward_type="comic",
        termination_error_threshold=0.3,
        physics_timestep=0.005,
    )
    return composer.Environment(task=task, random_state=seed, strip_singleton_obs_buffer_dim=True)


@pytest.mark.parametrize(("observables", "ref_steps"), [("time_index", (0,)), ("multi_clip_sans_id", (1, 2, 3, 4, 5))])
def test_parity_with_dm_control_built_directly(observables, ref_steps):
    seed, steps = 7, 100
    env = mocapact_envs.MocapTrackingEnv(
        ["CMU_016_22", "CMU_009_12-0-198"], observables=observables, ref_steps=ref_steps, backend="dm_control"
    )
    keys = resolve_observables(observables)
    direct = _direct_dm_control_env(env.clip_set, keys, ref_steps, seed)
    observation, _ = env.reset(seed=seed)
    timestep = direct.reset()
    actions = small_random_actions(seed, steps)
    episodes = 0
    for action in actions:
        for key in keys:
            np.testing.assert_allclose(
                observation[key], np.asarray(timestep.observation[key], np.float32).ravel(), rtol=1e-6, atol=1e-6
            )
        observation, reward, terminated, truncated, _ = env.step(action)
        timestep = direct.step(action)
        assert reward == pytest.approx(timestep.reward, rel=1e-9)
        assert (terminated or truncated) == timestep.last()
        assert terminated == (timestep.last() and timestep.discount == 0.0)
        if terminated or truncated:
            episodes += 1
            observation, _ = env.reset()
            timestep = direct.reset()
    assert episodes >= 2, "the comparison should cross episode boundaries"


def test_same_seed_same_episode_and_different_seeds_differ():
    env = mocapact_envs.MocapTrackingEnv("CMU_009_12")
    actions = small_random_actions(0, 40)

    def episode(seed):
        observation, info = env.reset(seed=seed)
        trace = [observation["walker/joints_pos"].copy()]
        for action in actions:
            observation, reward, terminated, truncated, _ = env.step(action)
            trace.append(observation["walker/joints_pos"].copy())
            if terminated or truncated:
                break
        return info["start_time_in_clip"], np.array(trace)

    start_a, trace_a = episode(3)
    start_b, trace_b = episode(3)
    assert start_a == start_b
    np.testing.assert_array_equal(trace_a, trace_b)
    starts = {episode(seed)[0] for seed in range(6)}
    assert len(starts) >= 4, f"random starts should vary with the seed, got {starts}"


def test_action_noise_changes_trajectory_reproducibly():
    env = mocapact_envs.MocapTrackingEnv("CMU_016_22", random_start=False, act_noise=0.1)
    zero = np.zeros(56, np.float32)

    def first_steps(seed):
        env.reset(seed=seed)
        return np.array([env.step(zero)[0]["walker/joints_pos"] for _ in range(3)])

    np.testing.assert_array_equal(first_steps(1), first_steps(1))
    assert not np.allclose(first_steps(1), first_steps(2))


def test_termination_and_truncation_semantics():
    # Zero actions from the clip start: the humanoid falls and tracking fails.
    env = mocapact_envs.MocapTrackingEnv("CMU_016_22", random_start=False)
    last_step = env.clip_set.snippets[0].end
    _, info = env.reset(seed=0)
    assert info["start_time_in_clip"] == 0.0
    assert info["last_time_in_clip"] == pytest.approx(1.0)
    tracker = EpisodeTracker()
    tracker.on_reset(info)
    zero = np.zeros(56, np.float32)
    for step in range(1, last_step + 1):  # noqa: B007 (read after the loop)
        _, reward, terminated, truncated, info = env.step(zero)
        assert 0.0 <= reward <= 1.45
        finished = tracker.on_step(reward, terminated, truncated, info)
        if terminated or truncated:
            break
    assert terminated and not truncated and info["tracking_error"] > 0.3
    assert 0 < finished[0].norm_episode_length < 0.5
    assert info["time_in_clip"] == pytest.approx(step * 0.03 / (last_step * 0.03))

    # Without a termination threshold the episode runs to the snippet end and truncates.
    env = mocapact_envs.MocapTrackingEnv("CMU_016_22-10-50", random_start=False, termination_error_threshold=np.inf)
    _, info = env.reset(seed=0)
    tracker.on_reset(info)
    for step in range(1, 100):  # noqa: B007 (read after the loop)
        _, reward, terminated, truncated, info = env.step(zero)
        finished = tracker.on_step(reward, terminated, truncated, info)
        if terminated or truncated:
            break
    assert truncated and not terminated
    assert step == 40  # steps 10..50 with reference step 0: 40 transitions
    assert finished[0].norm_episode_length == pytest.approx(1.0)
    assert info["physics_state"].shape == env.physics.get_state().shape


def test_render_shows_humanoid_and_ghost():
    env = mocapact_envs.MocapTrackingEnv("CMU_016_22", render_mode="rgb_array", width=160, height=120)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8
    assert frame.std() > 10
    assert env.metadata["render_fps"] == pytest.approx(1 / 0.03)


def test_async_vector_env():
    envs = gym.make_vec("mocapact/MocapTracking-CMU_016_22-v0", num_envs=2, vectorization_mode="async")
    observations, infos = envs.reset(seed=0)
    assert observations["walker/joints_pos"].shape == (2, 56)
    for _ in range(5):
        observations, rewards, terminated, truncated, infos = envs.step(np.zeros((2, 56), np.float32))
    assert rewards.shape == (2,)
    envs.close()


def test_sb3_ppo_learns_without_error():
    from stable_baselines3 import PPO

    env = gym.make("mocapact/MocapTracking-CMU_016_22-v0")
    model = PPO("MultiInputPolicy", env, n_steps=512, batch_size=128, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=2048)
    assert model.num_timesteps >= 2048


@pytest.mark.parametrize("mode", ["vector_entry_point", "sync"])
def test_per_world_random_start_keeps_the_random_worlds_stream(mode):
    """Worlds given random_start=False start every episode at the snippet's start; the others start exactly
    where an all-random vector env with the same seeds starts them (the draw is made either way)."""
    from mocapact_envs.envs.factory import make_tracking_vec_env

    kwargs = dict(min_steps=10)
    mixed = make_tracking_vec_env("CMU_016_22-0-82", 4, "fast", mode, random_start=(False, True, True, False), **kwargs)
    all_random = make_tracking_vec_env("CMU_016_22-0-82", 4, "fast", mode, random_start=True, **kwargs)
    replaced_starts = []
    for seed in range(5):
        _, mixed_info = mixed.reset(seed=seed)
        _, random_info = all_random.reset(seed=seed)
        np.testing.assert_array_equal(mixed_info["start_time_in_clip"][[0, 3]], 0.0)
        np.testing.assert_array_equal(
            mixed_info["start_time_in_clip"][[1, 2]], random_info["start_time_in_clip"][[1, 2]]
        )
        replaced_starts.extend(random_info["start_time_in_clip"][[0, 3]])
    assert max(replaced_starts) > 0.1, "the fixed worlds' own draws were random starts, replaced by the start"


def test_per_world_random_start_needs_one_flag_per_world():
    from mocapact_envs.envs.factory import make_tracking_vec_env

    for mode in ("vector_entry_point", "sync"):
        with pytest.raises(ValueError, match=r"random_start must be a bool or 4 bools.*\(True, False\)"):
            make_tracking_vec_env("CMU_016_22-0-82", 4, "fast", mode, random_start=(True, False))
