"""The transfer tasks (GoToTarget, VelocityControl) and the NPMP low-level policy format and wrapper."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import mocapact_envs
from mocapact_envs.envs.transfer import GoToTargetEnv, VelocityControlEnv
from mocapact_envs.mocap.source import MocapSourceError
from mocapact_envs.policies import low_level
from mocapact_envs.policies.low_level import LowLevelPolicy, LowLevelPolicyConfig, as_low_level_policy
from mocapact_envs.tasks.observables import BASE, CMU_HUMANOID
from mocapact_envs.wrappers.latent_actions import LowLevelActionWrapper

TASK_IDS = ("mocapact/GoToTarget-v0", "mocapact/VelocityControl-v0")
OBSERVATION_SIZES = {"mocapact/GoToTarget-v0": 227, "mocapact/VelocityControl-v0": 230}
EPISODE_STEPS = {"mocapact/GoToTarget-v0": 833, "mocapact/VelocityControl-v0": 2000}
LOCOMOTION_LATENT_SIZE = 20


@pytest.fixture(scope="module")
def saved_decoder(tmp_path_factory):
    """A randomly initialised decoder of MoCapAct's shape (3 x 1024, latent 20), saved and its directory."""
    torch.manual_seed(0)
    policy = LowLevelPolicy(LowLevelPolicyConfig(latent_size=LOCOMOTION_LATENT_SIZE))
    rng = np.random.default_rng(0)
    policy.set_observation_statistics(rng.normal(size=205), rng.uniform(0.5, 2.0, size=205))
    return policy, policy.save(tmp_path_factory.mktemp("decoder"))


def size_of(observation: dict) -> int:
    return sum(value.size for value in observation.values())


def seeded_actions(seed: int, steps: int, size: int = 56, scale: float = 0.1) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(0.0, scale, (steps, size)), -1, 1).astype(np.float32)


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_registered_task_passes_check_env(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)  # render modes: tests/test_rendering.py
    observation, _ = env.reset(seed=0)
    assert size_of(observation) == OBSERVATION_SIZES[env_id]
    assert sum(int(np.prod(s.shape)) for s in env.observation_space.values()) == OBSERVATION_SIZES[env_id]
    assert list(observation) == sorted(observation)
    assert env.action_space == gym.spaces.Box(-1, 1, (56,), np.float32)
    assert env.unwrapped.episode_steps == EPISODE_STEPS[env_id]
    assert set(BASE) <= set(observation), "the base proprioception a low-level policy reads must be observed"


def test_task_observables_are_the_ones_named():
    go_to_target = GoToTargetEnv()
    assert set(go_to_target.observation_space) == set(CMU_HUMANOID) | {"walker/target"}
    velocity_control = VelocityControlEnv()
    extra = {"walker/torso_xvel", "walker/torso_yvel", "task/velocity_command"}
    assert set(velocity_control.observation_space) == set(CMU_HUMANOID) | extra
    assert velocity_control.observation_space["task/velocity_command"].shape == (4,)


@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")
@pytest.mark.filterwarnings("ignore:.*symmetric and normalized space")
@pytest.mark.parametrize("env_id", TASK_IDS)
def test_task_with_low_level_policy_passes_check_env(env_id, saved_decoder):
    _, directory = saved_decoder
    env = gym.make(env_id, low_level_policy=str(directory))
    assert env.action_space == gym.spaces.Box(-3, 3, (LOCOMOTION_LATENT_SIZE,), np.float32)
    assert env.observation_space == env.unwrapped.observation_space
    check_env(LowLevelActionWrapper(env.unwrapped, directory), skip_render_check=True)


def test_saved_decoder_reloads_to_identical_actions(saved_decoder):
    policy, directory = saved_decoder
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((directory / "config.json").read_text())
    assert config["format"] == "mocapact_envs.low_level_policy"
    assert config["latent_size"] == LOCOMOTION_LATENT_SIZE and config["hidden_sizes"] == [1024, 1024, 1024]
    assert config["observation_keys"] == sorted(BASE) and config["observation_size"] == 205

    reloaded = LowLevelPolicy.load(directory)
    assert reloaded.config == policy.config
    rng = np.random.default_rng(1)
    observations = rng.normal(size=(8, 205)).astype(np.float32)
    latents = rng.normal(size=(8, LOCOMOTION_LATENT_SIZE)).astype(np.float32)
    batch = policy.act(observations, latents)
    assert batch.shape == (8, 56)
    np.testing.assert_array_equal(reloaded.act(observations, latents), batch)
    single = reloaded.act(observations[3], latents[3])
    assert single.shape == (56,)
    np.testing.assert_allclose(single, batch[3], rtol=1e-5, atol=1e-6)
    # The normaliser is part of the policy: the same MLP without it acts differently.
    identity = LowLevelPolicy(policy.config)
    identity.mlp.load_state_dict(policy.mlp.state_dict())
    assert not np.allclose(identity.act(observations, latents), batch)


def test_decoder_architecture_is_linear_layernorm_elu():
    policy = LowLevelPolicy(LowLevelPolicyConfig(latent_size=60, hidden_sizes=(32, 16)))
    kinds = [type(layer).__name__ for layer in policy.mlp]
    assert kinds == ["Linear", "LayerNorm", "ELU", "Linear", "LayerNorm", "ELU", "Linear"]
    assert policy.mlp[0].in_features == 205 + 60 and policy.mlp[-1].out_features == 56


def test_wrapper_steps_with_the_decoders_clipped_action(saved_decoder):
    policy, directory = saved_decoder
    env = LowLevelActionWrapper(VelocityControlEnv(), directory)
    observation, _ = env.reset(seed=3)
    for latent in np.random.default_rng(2).uniform(-5, 5, (3, LOCOMOTION_LATENT_SIZE)).astype(np.float32):
        expected = policy.act(policy.flatten_observation(observation), np.clip(latent, -3, 3))
        observation, _, terminated, _, info = env.step(latent)
        np.testing.assert_array_equal(info["low_level_action"], np.clip(expected, -1, 1))
        assert not terminated


def test_wrapper_on_tracking_env_and_clear_error_without_base_observables(saved_decoder):
    _, directory = saved_decoder
    tracking = LowLevelActionWrapper(mocapact_envs.MocapTrackingEnv("CMU_016_22", random_start=False), directory)
    tracking.reset(seed=0)
    _, reward, _, _, info = tracking.step(np.zeros(LOCOMOTION_LATENT_SIZE, np.float32))
    assert info["low_level_action"].shape == (56,) and np.isfinite(reward)

    lacking = mocapact_envs.MocapTrackingEnv("CMU_016_22", observables=["walker/joints_pos", "walker/time_in_clip"])
    with pytest.raises(ValueError, match="walker/actuator_activation.*lacks"):
        LowLevelActionWrapper(lacking, directory)


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_episode_is_truncated_at_the_configured_length(env_id):
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    # Without gravity the walker cannot fall, so the episode runs to its time limit.
    env.physics.model.opt.gravity[:] = 0.0
    env.reset(seed=0)
    zero = np.zeros(56, np.float32)
    steps, truncated = 0, False
    while not truncated and steps <= EPISODE_STEPS[env_id]:
        _, _, terminated, truncated, _ = env.step(zero)
        steps += 1
        assert not terminated
    assert truncated and steps == EPISODE_STEPS[env_id]


@pytest.mark.parametrize("cls", [GoToTargetEnv, VelocityControlEnv])
def test_episode_steps_override(cls):
    env = cls(episode_steps=5)
    env.reset(seed=0)
    flags = [env.step(np.zeros(56, np.float32))[2:4] for _ in range(5)]
    assert flags == [(False, False)] * 4 + [(False, True)]


@pytest.mark.parametrize("cls", [GoToTargetEnv, VelocityControlEnv])
def test_render_fps_follows_the_control_timestep(cls):
    assert cls.metadata["render_fps"] == pytest.approx(1 / 0.03)
    env = cls(control_timestep=0.06, episode_steps=5)
    assert env.metadata["render_fps"] == pytest.approx(1 / 0.06)
    assert cls.metadata["render_fps"] == pytest.approx(1 / 0.03)  # the instance's is a copy
    env.close()


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_walker_falls_with_zero_actions_and_episode_terminates(env_id):
    env = gym.make(env_id).unwrapped
    env.reset(seed=1)
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated) and steps < 100:
        _, reward, terminated, truncated, _ = env.step(np.zeros(56, np.float32))
        steps += 1
        assert 0.0 <= reward <= 1.0
    assert terminated and not truncated, "a humanoid without control falls and touches the floor within 3 s"


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_same_seed_gives_the_same_episode(env_id):
    actions = seeded_actions(0, 25)

    def rollout(env, seed):
        observation, info = env.reset(seed=seed)
        trace = [np.concatenate(list(observation.values())), info["physics_state"]]
        for action in actions:
            observation, reward, terminated, truncated, info = env.step(action)
            trace += [np.concatenate(list(observation.values())), np.array([reward, terminated, truncated])]
            if terminated or truncated:
                break
        return np.concatenate(trace)

    first, second = gym.make(env_id).unwrapped, gym.make(env_id).unwrapped
    reference = rollout(first, 7)
    rollout(first, 8)  # another episode in between must not change the next one
    np.testing.assert_array_equal(rollout(first, 7), reference)
    np.testing.assert_array_equal(rollout(second, 7), reference)
    assert not np.array_equal(rollout(second, 8)[:300], reference[:300])


def test_go_to_target_reward_and_moving_target():
    env = GoToTargetEnv()
    distances, rewards = [], []
    for seed in range(3):
        env.reset(seed=seed)
        for action in seeded_actions(seed, 15):
            _, reward, terminated, _, info = env.step(action)
            rewards.append(reward)
            distances.append(info["distance_to_target"])
            if terminated:
                break
    assert set(rewards) <= {0.0, 1.0}
    assert rewards == [float(d < 1.0) for d in distances]

    # A tolerance larger than the floor rewards every step; after 10 rewarded steps the
    # target respawns, in the next step (dm_control moves it before rewarding).
    always = GoToTargetEnv(distance_tolerance=100.0, steps_before_moving_target=10)
    _, info = always.reset(seed=0)
    start = info["target_position"]
    positions = []
    for action in seeded_actions(0, 12):
        _, reward, terminated, _, info = always.step(action)
        assert reward == 1.0 and not terminated
        positions.append(info["target_position"])
    assert all(np.array_equal(p, start) for p in positions[:10])
    assert not np.array_equal(positions[10], start)
    assert np.array_equal(positions[11], positions[10])
    assert np.all(np.abs(positions[10]) <= 4.0)


def test_velocity_control_reward_and_command_schedule():
    period = 5
    env = VelocityControlEnv(steps_before_changing_velocity=period)
    observation, info = env.reset(seed=4)
    first_command = observation["task/velocity_command"]
    speed, heading = info["target_speed"], info["target_heading"]
    np.testing.assert_allclose(first_command, [speed, np.sin(heading), np.cos(heading), 0.0], rtol=1e-6)
    assert 0 <= speed <= 4.5 and 0 <= heading <= 2 * np.pi
    for step, action in enumerate(seeded_actions(4, 8), start=1):
        commanded = info["target_speed"], info["target_heading"]
        observation, reward, terminated, _, info = env.step(action)
        assert not terminated
        velocity = info["torso_velocity"]
        speed_now = np.linalg.norm(velocity)
        heading_error_cos = np.dot(velocity / speed_now, [np.cos(commanded[1]), np.sin(commanded[1])])
        # Every step, the last of a period too, is rewarded for the command the walker followed.
        expected = np.exp(-(((commanded[0] - speed_now) / 0.75) ** 2)) * ((heading_error_cos + 1) / 2) ** 7
        assert reward == pytest.approx(expected, rel=1e-6)
        assert 0.0 <= reward <= 1.0
        assert observation["task/velocity_command"][3] == pytest.approx((step % period) / period)
        changed = (info["target_speed"], info["target_heading"]) != commanded
        assert changed == (step % period == 0)
    assert observation["walker/torso_xvel"][0] == pytest.approx(info["torso_velocity"][0], rel=1e-5)


@pytest.mark.parametrize("cls", [GoToTargetEnv, VelocityControlEnv])
def test_render_rgb_array(cls):
    env = cls(render_mode="rgb_array", width=64, height=48)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8 and frame.std() > 0
    env.close()


def test_bad_arguments_get_clear_errors(tmp_path, saved_decoder):
    with pytest.raises(MocapSourceError, match="CMU_999_99"):
        GoToTargetEnv(standing_pose_clip="CMU_999_99")
    with pytest.raises(ValueError, match="standing pose step 100000 .* 0 to"):
        VelocityControlEnv(standing_pose_step=100_000)
    with pytest.raises(ValueError, match="'nope'.*cmu_humanoid"):
        GoToTargetEnv(proprioception="nope")
    with pytest.raises(ValueError, match="episode_steps"):
        VelocityControlEnv(episode_steps=0)
    with pytest.raises(ValueError, match="unknown render_mode 'rgb'.*'rgb_array'"):
        GoToTargetEnv(render_mode="rgb")
    with pytest.raises(FileNotFoundError, match="config.json"):
        LowLevelPolicy.load(tmp_path)
    with pytest.raises(ValueError, match="activation 'gelu'.*elu"):
        LowLevelPolicyConfig(activation="gelu")
    policy, _ = saved_decoder
    with pytest.raises(ValueError, match=r"latent must have shape \(20,\)"):
        policy.act(np.zeros(205, np.float32), np.zeros(60, np.float32))


def frames_standing(env, action: np.ndarray, max_steps: int = 150) -> int:
    """Steps until the episode terminates (a fall) with a constant action, at most ``max_steps``."""
    env.reset(seed=3)
    for step in range(1, max_steps + 1):
        if env.step(action)[2]:
            return step
    return max_steps


@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")
@pytest.mark.filterwarnings("ignore:.*symmetric and normalized space")
@pytest.mark.parametrize("env_id", TASK_IDS)
def test_pretrained_decoder_works_out_of_the_box(env_id):
    shipped = LowLevelPolicy.load(low_level.SHIPPED_LOW_LEVEL_POLICY)
    env = gym.make(env_id, low_level_policy="pretrained")
    size = shipped.latent_size
    assert env.action_space == gym.spaces.Box(-3, 3, (size,), np.float32)
    check_env(LowLevelActionWrapper(env.unwrapped, "pretrained"), skip_render_check=True)
    # The prior's mean latent is a learned motor behaviour: it keeps the humanoid up longer than
    # holding the raw actuators at zero, which falls within 3 s.
    decoded = frames_standing(gym.make(env_id, low_level_policy="pretrained"), np.zeros(size, np.float32))
    raw = frames_standing(gym.make(env_id), np.zeros(56, np.float32))
    assert decoded > raw, (decoded, raw)


def test_pretrained_decoder_is_small_and_named_clearly(tmp_path, monkeypatch):
    files = list(low_level.SHIPPED_LOW_LEVEL_POLICY.iterdir())
    assert {f.name for f in files} == {"config.json", "model.safetensors"}
    assert sum(f.stat().st_size for f in files) < 5_000_000
    config = json.loads((low_level.SHIPPED_LOW_LEVEL_POLICY / "config.json").read_text())
    assert config["extra"]["source"].startswith("zoo/"), "the config says which zoo policy it came from"
    with pytest.raises(TypeError, match="'pretrained' or the path"):
        as_low_level_policy(3)
    monkeypatch.setattr(low_level, "SHIPPED_LOW_LEVEL_POLICY", tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="shipped low-level policy is missing"):
        gym.make("mocapact/VelocityControl-v0", low_level_policy="pretrained")
