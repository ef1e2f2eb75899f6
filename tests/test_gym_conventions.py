"""Gymnasium's conventions for every environment kind: pickling, deep copies, JSON specs, episode
lengths in the spec, ids that make without arguments, the reference source named, a light import."""

import copy
import pickle
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec

import mocapact_envs
from mocapact_envs.mocap.source import MocapSourceError, get_source
from mocapact_envs.policies.low_level import LowLevelPolicy
from mocapact_envs.policies.run_layout import SHIPPED_EXPERTS

# Each kind of environment the package registers, made as a user makes it.
ENV_MAKERS = {
    "tracking_fast": lambda: gym.make("mocapact/MocapTracking-CMU_016_22-v0"),
    "tracking_dm_control": lambda: gym.make("mocapact/MocapTracking-CMU_016_22-v0", backend="dm_control"),
    "tracking_vector": lambda: gym.make_vec(
        "mocapact/MocapTracking-CMU_016_22-v0", num_envs=2, vectorization_mode="vector_entry_point"
    ),
    "go_to_target": lambda: gym.make("mocapact/GoToTarget-v0"),
    "velocity_control": lambda: gym.make("mocapact/VelocityControl-v0"),
    "motion_completion": lambda: gym.make("mocapact/MotionCompletion-CMU_016_22-v0", max_steps=40),
}


def first_observation(env, seed: int = 5) -> dict[str, np.ndarray]:
    observation, _ = env.reset(seed=seed)
    return observation


@pytest.mark.parametrize("kind", sorted(ENV_MAKERS))
def test_every_env_kind_pickles_and_deep_copies(kind):
    env = ENV_MAKERS[kind]()
    expected = first_observation(env)
    action = np.zeros(env.action_space.shape, np.float32)
    stepped = env.step(action)[0]
    for duplicate in (pickle.loads(pickle.dumps(env)), copy.deepcopy(env)):
        assert type(duplicate.unwrapped) is type(env.unwrapped)
        assert duplicate.unwrapped is not env.unwrapped
        # A copy is the same environment built again: same seed and actions, same episode.
        observation = first_observation(duplicate)
        for key, value in expected.items():
            np.testing.assert_array_equal(observation[key], value)
        for key, value in duplicate.step(action)[0].items():
            np.testing.assert_array_equal(value, stepped[key])
        duplicate.close()
    env.close()


def test_spec_with_path_arguments_round_trips_through_json(mocap_folder, tmp_path):
    clip_list = tmp_path / "clips.txt"
    clip_list.write_text("CMU_016_22-0-60\n")
    env = gym.make("mocapact/MocapTracking-v0", clips=clip_list, mocap_path=Path(mocap_folder))
    text = env.spec.to_json()
    assert env.spec.kwargs["mocap_path"] == str(mocap_folder) and env.spec.kwargs["clips"] == str(clip_list)
    remade = gym.make(EnvSpec.from_json(text))
    for key, value in first_observation(env).items():
        np.testing.assert_array_equal(first_observation(remade)[key], value)
    assert remade.unwrapped.snippet_ids == ("CMU_016_22-0-60",)
    for made in (env, remade):
        made.close()

    completion = gym.make("mocapact/MotionCompletion-v0", prompt_experts=SHIPPED_EXPERTS, max_steps=40)
    remade = gym.make(EnvSpec.from_json(completion.spec.to_json()))
    assert remade.unwrapped.expert_runs.keys() == {"CMU_016_22"}


def test_vector_env_specs_with_a_path_serialise(mocap_folder):
    from mocapact_envs.envs.factory import make_tracking_vec_env

    native = gym.make_vec(
        "mocapact/MocapTracking-CMU_016_22-v0",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        mocap_path=mocap_folder,
    )
    synchronous = make_tracking_vec_env("CMU_016_22", 2, vectorization_mode="sync", mocap_path=Path(mocap_folder))
    for envs in (native, synchronous):
        assert EnvSpec.from_json(envs.spec.to_json()).kwargs["mocap_path"] == str(mocap_folder)
        envs.close()


def test_spec_with_a_policy_object_serialises(tmp_path):
    policy = LowLevelPolicy({"hidden_sizes": [32]})
    unsaved = gym.make("mocapact/GoToTarget-v0", low_level_policy=policy)
    assert "unsaved LowLevelPolicy" in unsaved.spec.to_json()
    policy.save(tmp_path / "decoder")
    for given in (policy, LowLevelPolicy.load(tmp_path / "decoder"), tmp_path / "decoder"):
        env = gym.make("mocapact/GoToTarget-v0", low_level_policy=given)
        assert env.spec.kwargs["low_level_policy"] == str(tmp_path / "decoder")
        remade = gym.make(EnvSpec.from_json(env.spec.to_json()))
        assert remade.action_space == env.action_space == gym.spaces.Box(-3, 3, (60,), np.float32)
        latent = np.full(60, 0.5, np.float32)
        env.reset(seed=1), remade.reset(seed=1)
        np.testing.assert_array_equal(
            env.step(latent)[4]["low_level_action"], remade.step(latent)[4]["low_level_action"]
        )


def test_transfer_tasks_spec_their_episode_length():
    for env_id, steps in (("mocapact/GoToTarget-v0", 833), ("mocapact/VelocityControl-v0", 2000)):
        assert gym.spec(env_id).max_episode_steps == steps
        env = gym.make(env_id)
        # The TimeLimit gym.make adds ends episodes where the task itself truncates them.
        assert env.spec.max_episode_steps == env.unwrapped.episode_steps == steps
        env.close()
    # The task still truncates by itself, as before, without gym.make's TimeLimit.
    env = mocapact_envs.GoToTargetEnv(episode_steps=3)
    env.reset(seed=0)
    flags = [env.step(np.zeros(56, np.float32))[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]


def test_every_motion_completion_id_makes_without_arguments():
    ids = [env_id for env_id in gym.registry if env_id.startswith("mocapact/MotionCompletion")]
    assert "mocapact/MotionCompletion-v0" in ids and "mocapact/MotionCompletion-CMU_016_22-v0" in ids
    for env_id in ids:
        env = gym.make(env_id)
        _, info = env.reset(seed=0)
        assert env.unwrapped.prompt_snippet_id == "CMU_016_22-0-82" and info["episode_steps"] == 32
        assert (info["prompt_snippet_start"], info["prompt_snippet_end"]) == (0, 82)
        env.close()


def test_reference_source_is_named_and_checked(mocap_folder, tmp_path):
    env = gym.make("mocapact/MocapTracking-CMU_016_22-v0")
    reference = env.unwrapped.metadata["reference_source"]
    assert reference["source"] == f"AMC folder {Path(mocap_folder).resolve()}"
    assert reference["digest"].startswith("sha256:") and len(reference["digest"]) == 7 + 64
    vector = gym.make_vec("mocapact/MocapTracking-CMU_016_22-v0", num_envs=2, vectorization_mode="vector_entry_point")
    assert vector.metadata["reference_source"] == reference

    # The same clip copied into HDF5 files: another source, the same data, the same digest; and one
    # joint angle changed: different data under the same id, which the digest tells apart.
    converted, changed_file = tmp_path / "clips.h5", tmp_path / "changed.h5"
    with h5py.File(get_source(mocap_folder).clip_set("CMU_016_22").hdf5_path, "r") as source:
        for path in (converted, changed_file):
            with h5py.File(path, "w") as target:
                source.copy(source["CMU_016_22"], target, "CMU_016_22")
    with h5py.File(changed_file, "r+") as h5:
        h5["CMU_016_22/walkers/walker_0/joints"][10, 0] += 0.05
    same = gym.make("mocapact/MocapTracking-CMU_016_22-v0", mocap_path=converted)
    assert same.unwrapped.metadata["reference_source"] == {
        "source": f"HDF5 file {converted.resolve()}",
        "digest": reference["digest"],
    }
    changed = gym.make("mocapact/MocapTracking-CMU_016_22-v0", mocap_path=changed_file)
    assert changed.unwrapped.metadata["reference_source"]["digest"] != reference["digest"]
    with pytest.raises(MocapSourceError, match=f"HDF5 file {changed_file.resolve()} has digest .* not the expected"):
        gym.make("mocapact/MocapTracking-CMU_016_22-v0", mocap_path=changed_file, reference_digest=reference["digest"])


def test_minari_export_names_the_reference_and_its_env_checks_it(shipped_expert_rollouts, tmp_path, monkeypatch):
    import minari

    from mocapact_envs.datasets.minari_export import export_to_minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    with h5py.File(shipped_expert_rollouts, "r") as h5:
        recorded_source = h5.attrs["reference_source"]
    env = gym.make("mocapact/MocapTracking-v0", clips="CMU_016_22-0-82")
    expected = env.unwrapped.metadata["reference_source"]
    assert recorded_source == expected["source"]
    export_to_minari([shipped_expert_rollouts], "mocapact/CMU_016_22/expert-v0", ref_min_episodes=1)
    dataset = minari.load_dataset("mocapact/CMU_016_22/expert-v0")
    assert dataset.spec.env_spec.kwargs["reference_digest"] == expected["digest"]
    assert f"{expected['source']} (content digest {expected['digest']}" in dataset.storage.metadata["description"]
    recovered = dataset.recover_environment()
    assert recovered.unwrapped.metadata["reference_source"] == expected


def test_import_loads_neither_torch_nor_its_libraries():
    code = "import sys, mocapact_envs; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'stable_baselines3')))"
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert result.stdout.strip() == "[]"
