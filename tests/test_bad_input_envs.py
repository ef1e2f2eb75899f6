"""Bad arguments to the environments, and bad flags to the distillation, GPT and sweep scripts (issue 37):
each is refused before any work starts, by an error naming the value and what is allowed."""

import gymnasium as gym
import numpy as np
import pytest

import mocapact_envs  # noqa: F401  (registers the environments)

TRACKING = "mocapact/MocapTracking-CMU_016_22-v0"
SET_CHOICES = r"choose one of base, time_index, .*or pass a list of observable keys"
REF_STEPS_RULE = (
    r"ref_steps must be a non-empty sequence of integer step offsets >= 0, such as \(0,\) or \(1, 2, 3, 4, 5\)"
)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"observables": []}, ValueError, r"observables must name at least one observable, got \[\]; " + SET_CHOICES),
        ({"observables": 5}, TypeError, r"observables must be an observation set name or a list of keys, got 5"),
        ({"ref_steps": (1.5,)}, ValueError, REF_STEPS_RULE + r", got \(1\.5,\)"),
        ({"ref_steps": ()}, ValueError, REF_STEPS_RULE + r", got \(\)"),
        ({"ref_steps": 5}, TypeError, REF_STEPS_RULE + r", got 5 \(int\); for step 5 alone pass \(5,\)"),
        ({"ref_steps": "12"}, TypeError, REF_STEPS_RULE + r", got '12' \(str\)"),
        (
            {"termination_error_threshold": "0.3"},
            TypeError,
            r"termination_error_threshold must be > 0 \(float\('inf'\) never terminates\), got '0.3' \(str\)",
        ),
        ({"control_timestep": "0.03"}, TypeError, r"control_timestep must be > 0 seconds, got '0.03' \(str\)"),
        ({"min_steps": True}, TypeError, r"min_steps must be an integer >= 0, got True \(bool\)"),
        ({"act_noise": float("inf")}, ValueError, r"act_noise must be >= 0, got inf"),
    ],
)
@pytest.mark.parametrize("kind", ["single", "vector"])
def test_bad_tracking_arguments_are_named(kind, kwargs, error, message):
    with pytest.raises(error, match=message):
        if kind == "single":
            gym.make(TRACKING, **kwargs)
        else:
            gym.make_vec(TRACKING, num_envs=2, vectorization_mode="vector_entry_point", **kwargs)


def test_valid_spellings_of_the_same_values_are_accepted():
    # A numpy array or list of ints (a JSON spec gives lists) and integral floats mean what they say.
    env = gym.make(TRACKING, ref_steps=np.arange(1, 6), min_steps=10.0).unwrapped
    assert env.settings.ref_steps == (1, 2, 3, 4, 5) and env.settings.min_steps == 10
    assert gym.make(TRACKING, ref_steps=[0]).unwrapped.ref_steps == (0,)
    assert gym.make_vec(TRACKING, num_envs=2.0, vectorization_mode="vector_entry_point").num_envs == 2


@pytest.mark.parametrize(
    ("num_envs", "error"), [(0, ValueError), (-1, ValueError), (2.5, ValueError), ("2", TypeError)]
)
def test_vector_num_envs_must_be_a_positive_integer(num_envs, error):
    message = rf"num_envs must be a positive integer \(the number of worlds\), got {num_envs!r}"
    with pytest.raises(error, match=message):
        gym.make_vec(TRACKING, num_envs=num_envs, vectorization_mode="vector_entry_point")
    # The factory every trainer uses, whatever the vectorisation mode.
    from mocapact_envs.envs.factory import make_tracking_vec_env

    with pytest.raises(error, match=message):
        make_tracking_vec_env("CMU_016_22-0-82", num_envs, vectorization_mode="sync")


@pytest.mark.parametrize(
    ("env_id", "kwargs", "error", "message"),
    [
        ("mocapact/GoToTarget-v0", {"arena_size": (float("nan"), 8)}, ValueError, r"got \(nan, 8\)"),
        ("mocapact/VelocityControl-v0", {"arena_size": (8, float("inf"))}, ValueError, r"got \(8, inf\)"),
        ("mocapact/GoToTarget-v0", {"arena_size": (8, 8, 8)}, ValueError, r"got \(8, 8, 8\)"),
        ("mocapact/GoToTarget-v0", {"arena_size": 8}, TypeError, r"got 8 \(int\)"),
        ("mocapact/MotionCompletion-CMU_016_22-v0", {"arena_size": (50, float("nan"))}, ValueError, r"got \(50, nan\)"),
    ],
)
def test_arena_size_must_be_two_finite_lengths(env_id, kwargs, error, message):
    with pytest.raises(error, match=r"arena_size must be two finite lengths > 0 \(x, y\) in metres, " + message):
        gym.make(env_id, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_speed": float("nan")}, r"max_speed must be >= 0 m/s, finite, got nan"),
        ({"reward_margin": float("inf")}, r"reward_margin must be > 0 m/s, finite, got inf"),
        ({"direction_exponent": float("nan")}, r"direction_exponent must be >= 0, finite, got nan"),
        ({"steps_before_changing_velocity": 2.5}, r"steps_before_changing_velocity must be an integer >= 1, got 2.5"),
    ],
)
def test_velocity_command_settings_are_refused_when_made(kwargs, message):
    # NaN used to pass construction and fail at the first reset.
    with pytest.raises(ValueError, match=message):
        gym.make("mocapact/VelocityControl-v0", **kwargs)


def test_transfer_and_completion_numbers_are_named():
    with pytest.raises(ValueError, match=r"distance_tolerance must be > 0, got nan"):
        gym.make("mocapact/GoToTarget-v0", distance_tolerance=float("nan"))
    with pytest.raises(TypeError, match=r"episode_steps must be a positive integer, got '833' \(str\)"):
        gym.make("mocapact/GoToTarget-v0", episode_steps="833", max_episode_steps=833)
    with pytest.raises(ValueError, match=r"proprioception must name at least one observable, got \[\]"):
        gym.make("mocapact/GoToTarget-v0", proprioception=[])
    with pytest.raises(TypeError, match=r"max_steps must be an integer >= 2, got '500' \(str\)"):
        gym.make("mocapact/MotionCompletion-CMU_016_22-v0", max_steps="500")
    with pytest.raises(ValueError, match=r"prompt_steps must be an integer in \[1, max_steps=40\), got 40"):
        gym.make("mocapact/MotionCompletion-CMU_016_22-v0", max_steps=40, prompt_steps=40)


@pytest.mark.parametrize(
    "make",
    [
        lambda: gym.make(TRACKING),
        lambda: gym.make(TRACKING, backend="dm_control"),
        lambda: gym.make("mocapact/GoToTarget-v0"),
        lambda: gym.make("mocapact/VelocityControl-v0", low_level_policy="pretrained"),
        lambda: gym.make("mocapact/MotionCompletion-CMU_016_22-v0"),
    ],
    ids=["fast", "dm_control", "go_to_target", "velocity_control_low_level", "motion_completion"],
)
def test_unknown_reset_options_are_refused_by_name(make):
    env = make()
    name = type(env.unwrapped).__name__
    with pytest.raises(ValueError, match=rf"{name}\.reset\(\) got unknown option\(s\) 'seed'; it takes no options"):
        env.reset(options={"seed": 3})
    with pytest.raises(TypeError, match=rf"{name}\.reset\(\) options must be None or a dict, got \['seed'\]"):
        env.reset(options=["seed"])
    # No options, or an empty dict (what Gymnasium's vector envs pass on), reset as usual.
    assert env.reset(seed=0, options={})[0].keys() == env.reset(seed=0)[0].keys()


def test_vector_env_reset_options_name_the_valid_key():
    envs = gym.make_vec(TRACKING, num_envs=2, vectorization_mode="vector_entry_point")
    with pytest.raises(ValueError, match=r"got unknown option\(s\) 'mask'; its options are 'reset_mask'"):
        envs.reset(options={"mask": np.array([True, False])})
    envs.reset(seed=0)
    _, info = envs.reset(options={"reset_mask": np.array([True, False])})
    assert info["_time_in_clip"].tolist() == [True, False]
    # Gymnasium's sync vector env hands the options on to each MocapTrackingEnv, which names the bad key.
    sync = gym.make_vec(TRACKING, num_envs=2, vectorization_mode="sync")
    with pytest.raises(ValueError, match=r"MocapTrackingEnv\.reset\(\) got unknown option\(s\) 'mask'"):
        sync.reset(options={"mask": 1})
