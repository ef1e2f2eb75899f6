"""Policies take Minari's nested observations (``{"walker": {"joints_pos": ...}}``) as they take the environments'
flat ones: a dataset collected with the project's tools, its environment recovered by Minari, driven by the zoo's
expert and the shipped one, a relay and the shipped decoder."""

from __future__ import annotations

import numpy as np
import pytest

from mocapact_envs.tasks.observables import TIME_INDEX, flat_keyed, flatten_observation


def test_flat_keyed_unnests_by_key_prefix_without_copying():
    joints, time = np.arange(6.0).reshape(2, 3), np.array([[0.5], [0.25]])
    nested = {"walker": {"joints_pos": joints, "time_in_clip": time}, "task": {"velocity": {"x": time}}}
    flat = flat_keyed(nested)
    assert list(flat) == ["walker/joints_pos", "walker/time_in_clip", "task/velocity/x"]
    assert flat["walker/joints_pos"] is joints and flat["task/velocity/x"] is time
    already = {"walker/joints_pos": joints}
    assert flat_keyed(already) is already
    np.testing.assert_array_equal(
        flatten_observation(nested, ["walker/time_in_clip", "walker/joints_pos"]), np.concatenate([time, joints], 1)
    )
    with pytest.raises(KeyError, match=r"the observation lacks \['walker/body_height'\]; it has \['task/velocity/x'"):
        flatten_observation(nested, ["walker/body_height"])


@pytest.fixture(scope="module")
def recovered_env(shipped_expert_rollouts, tmp_path_factory):
    """The environment Minari recovers from a dataset exported from rollouts the collector wrote."""
    import minari

    from mocapact_envs.datasets.minari_export import export_to_minari

    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        export_to_minari([shipped_expert_rollouts], "mocapact/CMU_016_22/expert-v0", ref_min_episodes=1)
        dataset = minari.load_dataset("mocapact/CMU_016_22/expert-v0")
        env = dataset.recover_environment()
    yield env
    env.close()


def flat(observation: dict) -> dict[str, np.ndarray]:
    return {f"{group}/{name}": value for group, values in observation.items() for name, value in values.items()}


@pytest.mark.parametrize("which", ["zoo", "pretrained"])
def test_an_expert_drives_a_recovered_minari_env_for_an_episode(recovered_env, which):
    from mocapact_envs.policies.expert_files import load_expert

    expert = load_expert("zoo", "CMU_016_22-0-82") if which == "zoo" else load_expert("pretrained")
    observation, _ = recovered_env.reset(seed=0, options={"start_step": 0})
    assert set(observation) == {"walker"} and "joints_pos" in observation["walker"]  # nested, as Minari stores it
    steps = 0
    while True:
        action, _ = expert.predict(observation, deterministic=True)
        np.testing.assert_array_equal(action, expert.predict(flat(observation), deterministic=True)[0])
        value = expert.value(observation)
        assert value == expert.value(flat(observation))
        observation, _, terminated, truncated, info = recovered_env.step(action)
        steps += 1
        if terminated or truncated:
            break
    # From the snippet's start an expert of CMU_016_22-0-82 tracks most of its 82 steps (a zero policy falls in ~30).
    assert steps > 50 and info["time_in_clip"] > 0.6, (steps, info["time_in_clip"])


def test_a_relay_and_the_decoder_take_nested_observations(recovered_env):
    from mocapact_envs.mocap.ids import Snippet
    from mocapact_envs.policies.expert_files import load_expert
    from mocapact_envs.policies.low_level import as_low_level_policy
    from mocapact_envs.policies.relay import RelayExpert, plan_relay

    plan = plan_relay(Snippet("CMU_016_22", 0, 82), window_steps=50, overlap_steps=10)
    relay = RelayExpert(plan, [load_expert("zoo", "CMU_016_22-0-82"), load_expert("pretrained")], config={})
    decoder = as_low_level_policy("pretrained")
    latent = np.zeros(decoder.config.latent_size, np.float32)
    for start in (0, 45):  # the first window's expert, then the second's (it takes over at step 41)
        observation, _ = recovered_env.reset(seed=1, options={"start_step": start})
        assert set(observation) == {"walker"}
        assert relay.plan.window_index(np.array([start]))[0] == (start > 41)
        np.testing.assert_array_equal(relay.predict(observation)[0], relay.predict(flat(observation))[0])
        assert relay.value(observation) == relay.value(flat(observation))
        np.testing.assert_array_equal(
            decoder.act(decoder.flatten_observation(observation), latent),
            decoder.act(decoder.flatten_observation(flat(observation)), latent),
        )
    # A batch of nested observations, as a vector env over the recovered env would give them.
    batch = {
        "walker": {key.split("/")[1]: np.stack([observation["walker"][key.split("/")[1]]] * 3) for key in TIME_INDEX}
    }
    actions, _ = relay.predict(batch)
    assert actions.shape == (3, 56)
