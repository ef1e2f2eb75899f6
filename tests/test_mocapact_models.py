"""MoCapAct's published model kinds, converted: the actions MoCapAct's own code computed, reproduced.

The fixtures in tests/data/mocapact/ were written by MoCapAct's classes themselves
(tests/data/make_mocapact_fixtures.py) with random weights at small widths; the
full-size test maps MoCapAct's 1024-wide key layout built here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.running_mean_std import RunningMeanStd

import mocapact_envs  # noqa: F401  (registers the ids)
from mocapact_envs.envs.tracking import MocapTrackingEnv
from mocapact_envs.policies.gpt import GPTPolicy
from mocapact_envs.policies.low_level import LowLevelPolicy
from mocapact_envs.policies.mocapact_checkpoints import (
    ConversionError,
    policy_from_checkpoint,
    read_lightning_checkpoint,
    read_sb3_zip,
)
from mocapact_envs.policies.multiclip import MultiClipPolicy
from mocapact_envs.tools.convert_models import main, sb3_policy_from_mocapact
from mocapact_envs.tools.download import main as download_main
from mocapact_envs.training.task_policies import load_task_policy

FIXTURES = Path(__file__).parent / "data" / "mocapact"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURES / "expected.npz") as data:
        return dict(data)


def observations(expected, prefix="obs/"):
    return {name[len(prefix) :]: value for name, value in expected.items() if name.startswith(prefix)}


@pytest.fixture(scope="module")
def converted(tmp_path_factory, mocap_folder):
    """MoCapAct's published layout (multi-clip policy, GPT, a transfer policy with its decoder), converted once."""
    root = tmp_path_factory.mktemp("download")
    npmp = root / "multiclip_policy" / "full_dataset" / "model" / "model.ckpt"
    npmp.parent.mkdir(parents=True)
    shutil.copyfile(FIXTURES / "npmp.ckpt", npmp)
    shutil.copyfile(FIXTURES / "mlp.ckpt", npmp.parents[2] / "mlp.ckpt")
    shutil.copyfile(FIXTURES / "gpt.ckpt", root / "gpt.ckpt")
    transfer = root / "transfer" / "go_to_target" / "general_low_level"
    shutil.copytree(FIXTURES / "go_to_target", transfer)
    shutil.copyfile(FIXTURES / "npmp.ckpt", transfer / "low_level_policy.ckpt")  # as MoCapAct's training copies it
    output = root / "converted"
    assert download_main(["--convert", "--local-dir", str(root), "--converted-dir", str(output)]) == 0
    return output


def run_multiclip(policy: MultiClipPolicy, obs: dict[str, np.ndarray]) -> np.ndarray:
    latent, actions = None, []
    for t in range(next(iter(obs.values())).shape[1]):
        action, latent = policy.act(policy.flatten_observation({k: v[:, t] for k, v in obs.items()}), latent, True)
        actions.append(action)
    return np.stack(actions, axis=1)


def test_npmp_reproduces_mocapact_actions_and_its_decoder_is_a_low_level_policy(converted, expected):
    obs = observations(expected)
    policy = MultiClipPolicy.load(converted / "multiclip_policy" / "full_dataset" / "model" / "model" / "policy")
    assert (
        policy.config.kind == "npmp" and policy.config.latent_size == 8 and policy.config.ref_steps == (1, 2, 3, 4, 5)
    )
    # MoCapAct's concatenation order, not alphabetical.
    assert policy.config.decoder_observation_keys[:2] == ("walker/joints_pos", "walker/joints_vel")
    # Six steps carry the latent through the recurrent encoder.
    np.testing.assert_allclose(run_multiclip(policy, obs), expected["npmp/actions"], atol=TOLERANCE, rtol=0)
    assert np.abs(expected["npmp/actions"]).mean() > 0.1  # not a near-zero output that anything would match

    decoder = LowLevelPolicy.load(
        converted / "multiclip_policy" / "full_dataset" / "model" / "model" / "low_level_policy"
    )
    first = {k: v[:, 0] for k, v in obs.items()}
    actions = decoder.act(decoder.flatten_observation(first), expected["npmp/latents"])
    np.testing.assert_allclose(actions, expected["npmp/low_level_actions"], atol=TOLERANCE, rtol=0)


def test_mlp_reproduces_mocapact_actions(converted, expected):
    policy = MultiClipPolicy.load(converted / "multiclip_policy" / "mlp" / "policy")
    assert (policy.config.kind, policy.config.activation, policy.config.squash_output) == ("mlp", "tanh", True)
    assert not policy.config.layer_norm
    np.testing.assert_allclose(run_multiclip(policy, observations(expected)), expected["mlp/actions"], atol=TOLERANCE)


def test_gpt_reproduces_mocapact_actions_past_its_context(converted, expected):
    policy = GPTPolicy.load(converted / "gpt" / "policy")
    obs = observations(expected)
    steps = next(iter(obs.values())).shape[1]
    assert policy.config.context_length < steps  # the rolling context is exercised
    context, actions = [], []
    for t in range(steps):
        context.append(policy.flatten_observation({k: v[:, t] for k, v in obs.items()}))
        actions.append(policy.act(np.stack(context[-policy.config.context_length :], axis=1)))
    np.testing.assert_allclose(np.stack(actions, axis=1), expected["gpt/actions"], atol=TOLERANCE, rtol=0)
    assert np.abs(expected["gpt/actions"]).mean() > 0.1


def test_transfer_policy_reproduces_mocapact_actions_in_our_wrapped_task(converted, expected):
    directory = converted / "transfer" / "go_to_target" / "general_low_level"
    policy = load_task_policy(directory)
    actions, _ = policy.predict(observations(expected, "go_to_target_obs/"), deterministic=True)
    np.testing.assert_allclose(actions, expected["go_to_target/actions"], atol=TOLERANCE, rtol=0)

    # The same policy drives our GoToTarget through the converted MoCapAct decoder.
    env = gym.make("mocapact/GoToTarget-v0", low_level_policy=directory / "low_level_policy", episode_steps=5)
    observation, _ = env.reset(seed=0)
    assert env.action_space.shape == (8,)
    for _ in range(3):
        latent, _ = policy.predict(observation, deterministic=True)
        observation, _, terminated, truncated, info = env.step(latent)
        assert info["low_level_action"].shape == (56,) and np.abs(info["low_level_action"]).max() <= 1.0
    env.close()


def test_conversion_report_lists_every_model(converted):
    import json

    report = json.loads((converted / "conversion_report.json").read_text())
    assert sorted(r["kind"] for r in report["converted"]) == ["gpt", "mlp", "npmp", "transfer:go_to_target"]
    assert report["failed"] == []


def test_mocapact_layout_mismatch_is_an_error(converted, expected):
    policy = MultiClipPolicy.load(converted / "multiclip_policy" / "full_dataset" / "model" / "model" / "policy")
    keys = policy.config.observation_keys
    policy.check_environment(MocapTrackingEnv("CMU_016_22", observables=keys, ref_steps=(1, 2, 3, 4, 5)))
    # Same widths, other reference steps: only the environment can tell.
    with pytest.raises(ValueError, match=r"ref_steps=\(1, 2, 3, 4, 5\)"):
        policy.check_environment(MocapTrackingEnv("CMU_016_22", observables=keys, ref_steps=(0, 1, 2, 3, 4)))
    short = MocapTrackingEnv("CMU_016_22", observables=keys, ref_steps=(1, 2, 3))
    with pytest.raises(
        ValueError, match="walker/reference_rel_bodies_pos_local has 279 values, the policy expects 465"
    ):
        policy.check_environment(short)
    observation, _ = short.reset(seed=0)
    with pytest.raises(ValueError, match="reference_rel_bodies_quats has 372 values"):
        policy.flatten_observation({k: v[None] for k, v in observation.items()})
    with pytest.raises(ValueError, match="lacks"):
        policy.check_environment(MocapTrackingEnv("CMU_016_22", observables="base"))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Payload()}}, path)
    with pytest.raises(ConversionError, match=r"evil\.ckpt refers to (posix|os)\.system.*refused"):
        read_lightning_checkpoint(path)
    assert not marker.exists()


def test_truncated_or_foreign_files_give_errors_naming_the_file(tmp_path):
    data = (FIXTURES / "npmp.ckpt").read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match=r"truncated\.ckpt is not a PyTorch checkpoint"):
        read_lightning_checkpoint(truncated)
    foreign = tmp_path / "notes.ckpt"
    foreign.write_text("not a checkpoint\n")
    with pytest.raises(ConversionError, match=r"notes\.ckpt is not a PyTorch checkpoint"):
        read_lightning_checkpoint(foreign)
    plain = tmp_path / "weights.ckpt"
    torch.save({"model": torch.zeros(2)}, plain)
    with pytest.raises(ConversionError, match=r"weights\.ckpt is not a Lightning checkpoint of a MoCapAct policy"):
        read_lightning_checkpoint(plain)
    zip_data = (FIXTURES / "go_to_target" / "best_model.zip").read_bytes()
    (tmp_path / "best_model.zip").write_bytes(zip_data[:1000])
    with pytest.raises(ConversionError, match=r"best_model\.zip is not a readable stable-baselines3 zip"):
        read_sb3_zip(tmp_path / "best_model.zip")
    assert main([str(truncated), "--output", str(tmp_path / "out")]) == 1


def test_a_folder_with_nothing_to_convert_is_an_error(tmp_path, capsys):
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    (tmp_path / "empty" / "notes" / "readme.txt").write_text("no models here\n")
    assert main([str(tmp_path / "empty"), "--output", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert f"{tmp_path / 'empty'} holds nothing to convert" in error and "best_model.zip" in error
    assert not (tmp_path / "out").exists()


# -- MoCapAct's published full-size architectures ----------------------------------------------


def mocapact_mlp_state(prefix, sizes, layer_norm, generator):
    """Random weights under MoCapAct's ``create_mlp`` names: Linear, [LayerNorm], activation, ..., Linear."""
    state, index = {}, 0
    for layer, (in_size, out_size) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        state[f"{prefix}{index}.weight"] = torch.randn(out_size, in_size, generator=generator) * 0.02
        state[f"{prefix}{index}.bias"] = torch.randn(out_size, generator=generator)
        if layer_norm and layer < len(sizes) - 2:  # every hidden layer, not the output
            state[f"{prefix}{index + 1}.weight"] = torch.randn(out_size, generator=generator)
            state[f"{prefix}{index + 1}.bias"] = torch.randn(out_size, generator=generator)
        index += 3 if layer_norm else 2
    return state


def hyper_parameters(keys_and_sizes, **extra):
    space = spaces.Dict({k: spaces.Box(-np.inf, np.inf, (n,), np.float32) for k, n in keys_and_sizes.items()})
    obs_rms = {}
    for k, n in keys_and_sizes.items():
        obs_rms[k] = RunningMeanStd(shape=(n,))
        obs_rms[k].var = np.full(n, 4.0)
    return {
        "observation_space": space,
        "action_space": spaces.Box(-1.0, 1.0, (56,), np.float32),
        "ref_steps": np.array([1, 2, 3, 4, 5]),
        "features_extractor_kwargs": {"obs_rms": obs_rms},
        **extra,
    }


HIGH_LEVEL_SIZES = {
    "walker/joints_pos": 56, "walker/joints_vel": 56, "walker/sensors_velocimeter": 3, "walker/sensors_gyro": 3,
    "walker/end_effectors_pos": 12, "walker/world_zaxis": 3, "walker/actuator_activation": 56,
    "walker/sensors_touch": 10, "walker/sensors_torque": 6, "walker/body_height": 1,
    "walker/reference_rel_bodies_pos_local": 465, "walker/reference_rel_bodies_quats": 620,
}  # fmt: skip
BASE_KEYS = list(HIGH_LEVEL_SIZES)[:9]


def test_published_full_size_architectures_map_key_for_key():
    generator = torch.Generator().manual_seed(0)
    # The published NPMP: 1291 + 60 -> 2 x 1024 -> 120; 205 + 60 -> 3 x 1024 -> 56, layer norm, ELU.
    state = {
        **mocapact_mlp_state("reference_encoder.encoder.", [1291 + 60, 1024, 1024, 120], True, generator),
        **mocapact_mlp_state("action_decoder.", [205 + 60, 1024, 1024, 1024, 56], True, generator),
    }
    hp = hyper_parameters(
        HIGH_LEVEL_SIZES,
        observables={"ref_encoder": list(HIGH_LEVEL_SIZES), "decoder": BASE_KEYS},
        embed_size=60, layer_norm=True, activation_fn="torch.nn.ELU", embedding_correlation=0.0,
    )  # fmt: skip
    policy = policy_from_checkpoint({"state_dict": dict(state), "hyper_parameters": hp}, "npmp")
    converted = policy.state_dict()
    assert sum(p.numel() for p in policy.parameters()) == sum(t.numel() for t in state.values())
    for name, tensor in state.items():
        new = name.replace("reference_encoder.encoder.", "encoder.").replace("action_decoder.", "decoder.mlp.")
        assert torch.equal(converted[new], tensor), name
    np.testing.assert_allclose(policy.observation_std.numpy(), np.sqrt(4.0 + 1e-8), rtol=1e-6)

    # The published GPT: 206 -> 768, 8 blocks of 8 heads, context 32.
    layers, width = 8, 768
    gpt_state = {
        "gpt.pos_emb": torch.randn(1, 32, width, generator=generator),
        "gpt.tok_emb.weight": torch.randn(width, 206, generator=generator),
        "gpt.tok_emb.bias": torch.randn(width, generator=generator),
        "gpt.ln_f.weight": torch.randn(width, generator=generator),
        "gpt.ln_f.bias": torch.randn(width, generator=generator),
        "gpt.head.weight": torch.randn(56, width, generator=generator),
    }
    for i in range(layers):
        block = f"gpt.blocks.{i}."
        gpt_state[block + "attn.mask"] = torch.ones(32, 32).tril().view(1, 1, 32, 32)
        for name, shape in [
            ("ln1", (width,)), ("ln2", (width,)), ("attn.key", (width, width)), ("attn.query", (width, width)),
            ("attn.value", (width, width)), ("attn.proj", (width, width)), ("mlp.0", (4 * width, width)),
            ("mlp.2", (width, 4 * width)),
        ]:  # fmt: skip
            gpt_state[f"{block}{name}.weight"] = torch.randn(*shape, generator=generator)
            gpt_state[f"{block}{name}.bias"] = torch.randn(shape[0], generator=generator)
    hp = hyper_parameters(
        dict(list(HIGH_LEVEL_SIZES.items())[:10]),
        observables=list(HIGH_LEVEL_SIZES)[:10], block_size=32, n_layer=layers, n_head=8, n_embd=width,
    )  # fmt: skip
    gpt = policy_from_checkpoint({"state_dict": dict(gpt_state), "hyper_parameters": hp}, "gpt")
    converted = gpt.state_dict()
    learned = {k: v for k, v in gpt_state.items() if not k.endswith("attn.mask")}
    assert sum(p.numel() for p in gpt.parameters()) == sum(t.numel() for t in learned.values())
    assert torch.equal(converted["position"], gpt_state["gpt.pos_emb"])
    for i in range(layers):
        old = f"gpt.blocks.{i}.attn."
        qkv = torch.cat([gpt_state[old + n + ".weight"] for n in ("query", "key", "value")])
        assert torch.equal(converted[f"blocks.{i}.attention.qkv.weight"], qkv)
        assert torch.equal(converted[f"blocks.{i}.mlp.2.weight"], gpt_state[f"gpt.blocks.{i}.mlp.2.weight"])

    # A wrong width is refused with the parameter's name, never loaded partly.
    state["action_decoder.0.weight"] = state["action_decoder.0.weight"][:, :200]
    hp = hyper_parameters(
        HIGH_LEVEL_SIZES, observables={"ref_encoder": list(HIGH_LEVEL_SIZES), "decoder": BASE_KEYS},
        embed_size=60, layer_norm=True, activation_fn="torch.nn.ELU", embedding_correlation=0.0,
    )  # fmt: skip
    with pytest.raises(ConversionError, match=r"decoder\.mlp\.0\.weight has shape \(1024, 200\)"):
        policy_from_checkpoint({"state_dict": state, "hyper_parameters": hp}, "npmp")


def test_npmp_options_beyond_the_published_run_convert():
    """A non-recurrent, tanh, layer-norm-free, squashed NPMP: MoCapAct's forward written out against the mapping."""
    generator = torch.Generator().manual_seed(1)
    embed = 4
    state = {
        **mocapact_mlp_state("reference_encoder.encoder.", [1291, 32, 2 * embed], False, generator),
        **mocapact_mlp_state("action_decoder.", [205 + embed, 32, 56], False, generator),
    }
    hp = hyper_parameters(
        HIGH_LEVEL_SIZES,
        observables={"ref_encoder": list(HIGH_LEVEL_SIZES), "decoder": BASE_KEYS},
        embed_size=embed, ref_encoder_n_layers=1, ref_encoder_layer_size=32, decoder_n_layers=1,
        decoder_layer_size=32, recurrent_encoder=False, layer_norm=False, squash_output=True,
        activation_fn="torch.nn.Tanh", embedding_correlation=0.95,
    )  # fmt: skip
    policy = policy_from_checkpoint({"state_dict": dict(state), "hyper_parameters": hp}, "npmp")
    assert (policy.config.recurrent_encoder, policy.config.prior_alpha) == (False, 0.0)

    rng = np.random.default_rng(0)
    obs = {k: rng.normal(size=(3, n)).astype(np.float32) for k, n in HIGH_LEVEL_SIZES.items()}
    actions, _ = policy.act(policy.flatten_observation(obs), None, deterministic=True)

    def linear(x, prefix):
        return x @ state[prefix + "weight"].T + state[prefix + "bias"]

    scale = np.sqrt(4.0 + 1e-8)
    high = torch.as_tensor(np.concatenate([obs[k] for k in HIGH_LEVEL_SIZES], axis=1)) / scale
    base = torch.as_tensor(np.concatenate([obs[k] for k in BASE_KEYS], axis=1)) / scale
    hidden = torch.tanh(linear(high, "reference_encoder.encoder.0."))
    latent = linear(hidden, "reference_encoder.encoder.2.")[:, :embed]
    hidden = torch.tanh(linear(torch.cat([base, latent], dim=1), "action_decoder.0."))
    expected = torch.tanh(linear(hidden, "action_decoder.2."))
    np.testing.assert_allclose(actions, expected.numpy(), atol=TOLERANCE, rtol=0)


def test_published_transfer_architecture_maps_at_full_size():
    """MoCapAct's 3 x 1024 tanh PPO over GoToTarget's 227 values, concatenated in an order not the Dict's."""
    generator = torch.Generator().manual_seed(2)
    sizes = {**{k: n for k, n in HIGH_LEVEL_SIZES.items() if k in BASE_KEYS or k == "walker/body_height"}}
    sizes.update({"walker/appendages_pos": 15, "walker/sensors_accelerometer": 3, "walker/target": 3})
    assert sum(sizes.values()) == 227
    mocapact_keys = sorted(sizes, reverse=True)
    weights = {}
    for net in ("policy_net", "value_net"):
        for index, (in_size, out_size) in enumerate([(227, 1024), (1024, 1024), (1024, 1024)]):
            weights[f"mlp_extractor.{net}.{2 * index}.weight"] = (
                torch.randn(out_size, in_size, generator=generator) * 0.03
            )
            weights[f"mlp_extractor.{net}.{2 * index}.bias"] = torch.randn(out_size, generator=generator) * 0.1
    weights["action_net.weight"] = torch.randn(60, 1024, generator=generator) * 0.03
    weights["action_net.bias"] = torch.randn(60, generator=generator) * 0.1
    weights["value_net.weight"] = torch.randn(1, 1024, generator=generator)
    weights["value_net.bias"] = torch.randn(1, generator=generator)
    weights["log_std"] = torch.full((60,), float(np.log(2.5)))
    saved_kwargs = {"net_arch": [{"pi": [1024] * 3, "vf": [1024] * 3}], "activation_fn": torch.nn.Tanh}
    space = spaces.Dict({k: spaces.Box(-np.inf, np.inf, (n,), np.float32) for k, n in sizes.items()})
    policy, kwargs = sb3_policy_from_mocapact(weights, saved_kwargs, mocapact_keys, space, spaces.Box(-3, 3, (60,)))
    assert kwargs["net_arch"] == {"pi": [1024] * 3, "vf": [1024] * 3}

    rng = np.random.default_rng(0)
    obs = {k: rng.normal(size=(2, n)).astype(np.float32) for k, n in sizes.items()}
    with torch.no_grad():
        mean = policy.get_distribution({k: torch.as_tensor(v) for k, v in obs.items()}).distribution.mean
        x = torch.as_tensor(np.concatenate([obs[k] for k in mocapact_keys], axis=1))  # MoCapAct's order
        for index in range(3):
            layer = f"mlp_extractor.policy_net.{2 * index}."
            x = torch.tanh(x @ weights[layer + "weight"].T + weights[layer + "bias"])
        expected = x @ weights["action_net.weight"].T + weights["action_net.bias"]
    np.testing.assert_allclose(mean.numpy(), expected.numpy(), atol=TOLERANCE, rtol=0)
