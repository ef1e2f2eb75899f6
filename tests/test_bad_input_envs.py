"""Bad arguments to the environments, and bad flags to the distillation, GPT and sweep scripts (issue 37):
each is refused before any work starts, by an error naming the value and what is allowed."""

import socket
import threading

import gymnasium as gym
import numpy as np
import pytest
from tiny_runs import refused_by_baseline

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
    # The tracking envs read the snippet and the start step (tests/test_reset_options.py), the others nothing.
    valid = "its options are 'snippet', 'start_step'" if name == "MocapTrackingEnv" else "it takes no options"
    with pytest.raises(ValueError, match=rf"{name}\.reset\(\) got unknown option\(s\) 'seed'; {valid}"):
        env.reset(options={"seed": 3})
    with pytest.raises(TypeError, match=rf"{name}\.reset\(\) options must be None or a dict, got \['seed'\]"):
        env.reset(options=["seed"])
    # No options, or an empty dict (what Gymnasium's vector envs pass on), reset as usual.
    assert env.reset(seed=0, options={})[0].keys() == env.reset(seed=0)[0].keys()


def test_vector_env_reset_options_name_the_valid_key():
    envs = gym.make_vec(TRACKING, num_envs=2, vectorization_mode="vector_entry_point")
    with pytest.raises(
        ValueError, match=r"got unknown option\(s\) 'mask'; its options are 'snippet', 'start_step', 'reset_mask'"
    ):
        envs.reset(options={"mask": np.array([True, False])})
    envs.reset(seed=0)
    _, info = envs.reset(options={"reset_mask": np.array([True, False])})
    assert info["_time_in_clip"].tolist() == [True, False]
    # Gymnasium's sync vector env hands the options on to each MocapTrackingEnv, which names the bad key.
    sync = gym.make_vec(TRACKING, num_envs=2, vectorization_mode="sync")
    with pytest.raises(ValueError, match=r"MocapTrackingEnv\.reset\(\) got unknown option\(s\) 'mask'"):
        sync.reset(options={"mask": 1})


# -- the distillation, GPT and sweep scripts: bad flags refused before data is read or a folder written ---------------


def test_distill_refuses_bad_flags_before_training(shipped_expert_rollouts, tmp_path):
    run_dir = tmp_path / "run"
    error = refused_by_baseline("distill/train.py", "--rollouts", shipped_expert_rollouts, "--run-dir", run_dir,
                    "--batch-size", 0, "--total-steps", -5, "--learning-rate", "nan")  # fmt: skip
    assert "--batch-size 0: must be a positive number of windows" in error
    assert "--total-steps -5: must be a positive number of gradient steps" in error
    assert "--learning-rate nan: must be a positive, finite rate" in error
    # A held-out id the reference source lacks: named now, not at the first evaluation.
    error = refused_by_baseline("distill/train.py", "--rollouts", shipped_expert_rollouts, "--run-dir", run_dir,
                    "--val-snippets", "CMU_016_22-0-40", "CMU_999_99")  # fmt: skip
    assert "--val-snippets CMU_016_22-0-40 CMU_999_99: unknown clip id 'CMU_999_99'" in error
    error = refused_by_baseline("distill/train.py", "--rollouts", shipped_expert_rollouts, "--run-dir", run_dir,
                    "--val-snippets", "CMU_016_22-0-9999")  # fmt: skip
    assert "--val-snippets CMU_016_22-0-9999: snippet CMU_016_22-0-9999 is outside clip CMU_016_22" in error
    assert not run_dir.exists()


def test_gpt_refuses_unknown_eval_clips_before_training(shipped_expert_rollouts, tmp_path):
    from mocapact_envs.policies.run_layout import SHIPPED_EXPERTS

    run_dir = tmp_path / "run"
    error = refused_by_baseline("gpt/train.py", "--rollouts", shipped_expert_rollouts, "--run-dir", run_dir,
                    "--prompt-experts", SHIPPED_EXPERTS, "--eval-clips", "CMU_016_22", "CMU_016_21")  # fmt: skip
    assert f"--eval-clips CMU_016_21: no expert under {SHIPPED_EXPERTS} tracks it. Did you mean CMU_016_22?" in error
    assert f"track 1 clip(s): CMU_016_22 (`mocapact-zoo list --zoo {SHIPPED_EXPERTS}` lists" in error
    # Without experts to prompt there is no evaluation: the clips would be ignored.
    error = refused_by_baseline("gpt/train.py", "--rollouts", shipped_expert_rollouts, "--run-dir", run_dir,
                    "--eval-clips", "CMU_016_22")  # fmt: skip
    assert "--eval-clips CMU_016_22: motion completion is evaluated only with --prompt-experts" in error
    error = refused_by_baseline("gpt/train.py", "--rollouts", shipped_expert_rollouts, "--run-dir", run_dir,
                    "--batch-size", 0, "--eval-max-steps", 32)  # fmt: skip
    assert "--batch-size 0: must be a positive number of windows" in error
    assert "--eval-max-steps 32: must be more than the 32-step prompt" in error
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cpus-per-trial", 0], "--cpus-per-trial 0.0: must be a positive number of CPUs"),
        (["--cpus-per-trial", 1000], "--cpus-per-trial 1000: this machine has {cpus} CPUs, so no trial could ever"),
        (["--address", "http://x"], "--address 'http://x' is no Ray address (http:// is not Ray's); use host:port"),
    ],
    ids=["cpus_zero", "cpus_above_the_machine", "address_not_ray"],
)
def test_sweep_refuses_bad_resources_and_addresses_before_starting(tmp_path, flags, message):
    from mocapact_envs.training.ray_cluster import local_cpus

    error = refused_by_baseline("ppo_expert/sweep.py", "--snippets", "CMU_016_22-0-82", "--storage-path", tmp_path / "sweeps",
                    "--log-root", tmp_path / "experts", *flags)  # fmt: skip
    assert message.format(cpus=local_cpus()) in error
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "experts").exists()


def listener(reply: bytes | None) -> tuple[str, socket.socket]:
    """A local TCP server that is not Ray: it answers every connection with ``reply``, or (``None``) says nothing."""
    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def serve():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # closed
                return
            held.append(connection)
            if reply is not None:
                connection.recv(1024)
                connection.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return f"127.0.0.1:{server.getsockname()[1]}", server


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("foo", r"--address 'foo' is no Ray address; use host:port"),
        ("ray://", r"--address 'ray://' is no Ray address"),
        ("127.0.0.1:70000", r"--address '127.0.0.1:70000' is no Ray address"),
        ("nohost.invalid:6379", r"no Ray cluster answers at --address nohost.invalid:6379 \(.*\)\. Start one with"),
        ("ray://nohost.invalid", r"no Ray cluster answers at --address ray://nohost.invalid \("),
    ],
)
def test_ray_addresses_that_cannot_be_a_cluster_are_refused(address, message):
    from mocapact_envs.training.ray_cluster import check_ray_address

    with pytest.raises(ValueError, match=message):
        check_ray_address(address)


def test_a_port_that_is_not_ray_is_refused_in_seconds():
    from mocapact_envs.training.ray_cluster import check_ray_address

    # Nothing listens: refused at once. (A port held bound but not listening: closing a listener whose accept()
    # blocks in another thread does not reliably stop it listening.)
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{bound.getsockname()[1]}"
        with pytest.raises(ValueError, match=rf"no Ray cluster answers at --address {closed} \(.*refused"):
            check_ray_address(closed)
    # A web server answers, but not gRPC (ray.init waited on such a port for over 200 s).
    web, server = listener(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ValueError, match=rf"--address {web} answers, but not as a Ray cluster \(no gRPC handshake\)"):
        check_ray_address(web)
    server.close()
    # A port that accepts and says nothing: the timeout, not Ray's minutes of retries.
    silent, server = listener(None)
    with pytest.raises(ValueError, match=rf"no Ray cluster answers at --address {silent} within 1 s"):
        check_ray_address(silent, timeout=1.0)
    server.close()
