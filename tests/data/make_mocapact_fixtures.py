"""Writes tests/data/mocapact/: small checkpoints made by MoCapAct's own code, and the actions it computes.

Not part of the test suite and not runnable from the project's environment alone: it
imports MoCapAct's model classes from a checkout of https://github.com/microsoft/MoCapAct
(never vendored here) with the libraries MoCapAct pins, each with random weights at small
sizes but MoCapAct's real module layout, hyperparameters and observation statistics:

* ``npmp.ckpt``: ``mocapact.distillation.model.NpmpPolicy`` with the published run's
  settings (``cfg/multi_clip/train.txt``: ELU, layer norm, no tanh, prior correlation 0,
  observation normalisation), saved by PyTorch Lightning's ``Trainer.save_checkpoint``
  after one optimiser step at learning rate 0;
* ``mlp.ckpt``: ``MlpPolicy`` with MoCapAct's ``mlp_reference`` config (tanh, squashed output);
* ``gpt.ckpt``: ``GPTPolicy`` with the motion-completion settings but a tiny transformer;
* ``go_to_target/``: a stable-baselines3 1.5 PPO policy (``best_model.zip``) over
  GoToTarget's observations with latent actions, and its ``vecnormalize.pkl``, as
  ``mocapact.transfer.train`` writes them (the test adds ``npmp.ckpt`` as its
  ``low_level_policy.ckpt``, the copy MoCapAct's transfer training makes);
* ``expected.npz``: fixed observation batches and the actions MoCapAct's own
  ``predict`` (and the NPMP's ``low_level_policy``) computes from them.

Set-up used here (a throwaway folder outside the repository; gym 0.21 no longer builds,
0.23.1 satisfies MoCapAct's ``gym<0.24``; pip >= 24.1 rejects pytorch-lightning 1.6.4's
metadata, so an older pip installs it)::

    pip install --target old_pip "pip<24.1" "setuptools<66"
    PYTHONPATH=old_pip python -m pip install --target site --no-deps pytorch-lightning==1.6.4 \\
        stable-baselines3==1.5.0 gym==0.23.1 ml_collections pyDeprecate==0.3.2 torchmetrics==0.9.3 pandas absl-py
    git --git-dir=<fetched MoCapAct repo> archive HEAD mocapact | tar x -C src
    PYTHONPATH=site:src:old_pip .venv/bin/python tests/data/make_mocapact_fixtures.py

(torch is the project's; the checkpoints' pickles are the classes' own, so the torch
version only sets the zip container's version record.)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import gym
import ml_collections
import numpy as np
import pytorch_lightning as pl
import torch
from gym import spaces
from mocapact import observables
from mocapact.distillation import model
from mocapact.sb3 import features_extractor
from mocapact.sb3 import utils as sb3_utils
from stable_baselines3 import PPO
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from torch.utils.data import DataLoader

# MoCapAct's pinned libraries predate NumPy 2, which dropped these aliases.
np.Inf = np.infty = np.inf

OUT = Path(__file__).resolve().parent / "mocapact"
#: The widths of the walker observables in MoCapAct's rollout files (reference steps 1..5).
ROLLOUT_SIZES = {
    "walker/actuator_activation": 56, "walker/appendages_pos": 15, "walker/body_height": 1,
    "walker/end_effectors_pos": 12, "walker/gyro_anticlockwise_spin": 1, "walker/gyro_backward_roll": 1,
    "walker/gyro_control": 3, "walker/gyro_rightward_roll": 1, "walker/head_height": 1, "walker/joints_pos": 56,
    "walker/joints_vel": 56, "walker/joints_vel_control": 56, "walker/orientation": 9, "walker/position": 3,
    "walker/reference_appendages_pos": 75, "walker/reference_ego_bodies_quats": 620,
    "walker/reference_rel_bodies_pos_global": 465, "walker/reference_rel_bodies_pos_local": 465,
    "walker/reference_rel_bodies_quats": 620, "walker/reference_rel_joints": 280,
    "walker/reference_rel_root_pos_local": 15, "walker/reference_rel_root_quat": 20,
    "walker/sensors_accelerometer": 3, "walker/sensors_gyro": 3, "walker/sensors_torque": 6,
    "walker/sensors_touch": 10, "walker/sensors_velocimeter": 3, "walker/time_in_clip": 1, "walker/torso_xvel": 1,
    "walker/torso_yvel": 1, "walker/veloc_forward": 1, "walker/veloc_strafe": 1, "walker/veloc_up": 1,
    "walker/velocimeter_control": 3, "walker/world_zaxis": 3,
}  # fmt: skip
GO_TO_TARGET_SIZES = {
    **{k: ROLLOUT_SIZES[k] for k in observables.CMU_HUMANOID_OBSERVABLES},
    "walker/target": 3,
}
REF_STEPS = np.array([1, 2, 3, 4, 5])
BATCH, STEPS = 4, 6
EMBED = 8


def running_stats(rng, sizes):
    stats = {}
    for key, size in sizes.items():
        rms = RunningMeanStd(shape=(size,))
        rms.mean = rng.normal(0.0, 0.5, size)
        rms.var = rng.uniform(0.5, 2.0, size)
        rms.count = 1e6
        stats[key] = rms
    return stats


def observations(rng, stats, keys, shape):
    """Raw observations around the statistics, so the normalised inputs are of order 1."""
    return {
        k: (stats[k].mean + np.sqrt(stats[k].var) * rng.normal(size=(*shape, len(stats[k].mean)))).astype(np.float32)
        for k in keys
    }


def save_lightning(policy, batch, path):
    """Trains one step at learning rate 0 (weights unchanged) and saves as MoCapAct's training does."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            default_root_dir=tmp,
            max_steps=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp, save_top_k=0, save_last=True)],
            deterministic=True,
        )
        trainer.fit(policy, DataLoader([batch], batch_size=None))
        trainer.save_checkpoint(str(path))


def distillation_kwargs(config_name, stats, **overrides):
    config = ml_collections.ConfigDict(model_config(config_name))
    for key, value in overrides.items():
        config[key] = value
    action_space = spaces.Box(low=np.float32(-1.0), high=np.float32(1.0), shape=(56,), dtype=np.float32)
    full_space = spaces.Dict(
        {k: spaces.Box(-np.inf, np.inf, shape=(n,), dtype=np.float32) for k, n in ROLLOUT_SIZES.items()}
    )
    # As mocapact.distillation.train builds the policy, with --normalize_obs.
    return dict(
        observation_space=full_space,
        action_space=action_space,
        ref_steps=REF_STEPS,
        learning_rate=0.0,
        features_extractor_kwargs=dict(observable_keys=config.observables, obs_rms=stats),
        **config,
    )


def model_config(name):
    from mocapact.distillation import config as distillation_config

    return distillation_config.get_config(name).config


def run_sequence(policy, batches):
    """MoCapAct's deterministic predict over a sequence, carrying the recurrent state."""
    state, actions = None, []
    for t in range(batches[next(iter(batches))].shape[1]):
        action, state = policy.predict({k: v[:, t] for k, v in batches.items()}, state, deterministic=True)
        actions.append(action)
    return np.stack(actions, axis=1)


def main() -> int:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    stats = running_stats(rng, ROLLOUT_SIZES)
    OUT.mkdir(parents=True, exist_ok=True)
    high_level = list(observables.HIGH_LEVEL_OBSERVABLES)
    obs = observations(rng, stats, high_level, (BATCH, STEPS))
    expected = {f"obs/{k}": v for k, v in obs.items()}

    # NPMP, with the published run's overrides (cfg/multi_clip/train.txt) at toy widths.
    npmp = model.NpmpPolicy(
        **distillation_kwargs(
            "npmp",
            stats,
            embed_size=EMBED,
            ref_encoder_layer_size=16,
            decoder_layer_size=16,
            activation_fn="torch.nn.ELU",
            embedding_correlation=0.0,
            squash_output=False,
        )
    )
    train_obs = {k: torch.as_tensor(v[:, :3]) for k, v in obs.items()}
    save_lightning(npmp, (train_obs, torch.zeros(BATCH, 3, 56), torch.ones(BATCH, 3)), OUT / "npmp.ckpt")
    npmp.eval()
    expected["npmp/actions"] = run_sequence(npmp, obs)
    latents = rng.normal(size=(BATCH, EMBED)).astype(np.float32)
    with torch.no_grad():
        expected["npmp/low_level_actions"] = npmp.low_level_policy(
            {k: torch.as_tensor(v[:, 0]) for k, v in obs.items()}, torch.as_tensor(latents)
        ).numpy()
    expected["npmp/latents"] = latents

    # MLP with MoCapAct's mlp_reference config (tanh, squashed output, no layer norm).
    mlp = model.MlpPolicy(**distillation_kwargs("mlp_reference", stats, n_layers=2, layer_size=16))
    flat = {k: torch.as_tensor(v[:, 0]) for k, v in obs.items()}
    save_lightning(mlp, (flat, torch.zeros(BATCH, 56), torch.ones(BATCH)), OUT / "mlp.ckpt")
    mlp.eval()
    expected["mlp/actions"] = run_sequence(mlp, obs)

    # GPT: the motion-completion config with a tiny transformer; more steps than its context.
    gpt = model.GPTPolicy(
        **distillation_kwargs("gpt", stats, block_size=4, n_layer=2, n_head=2, n_embd=16, weight_decay=0.1)
    )
    with torch.no_grad():  # GPT's init (std 0.02) gives near-zero actions; wider weights make a sharper test
        for parameter in gpt.parameters():
            parameter.normal_(0.0, 0.2)
    save_lightning(gpt, (flat, torch.zeros(BATCH, 56), torch.ones(BATCH, 1)), OUT / "gpt.ckpt")
    gpt.eval()
    expected["gpt/actions"] = run_sequence(gpt, obs)

    # A GoToTarget transfer policy acting in the NPMP's latent space, as mocapact.transfer.train saves it.
    transfer_dir = OUT / "go_to_target"
    shutil.rmtree(transfer_dir, ignore_errors=True)
    transfer_dir.mkdir()
    task_space = spaces.Dict(
        {k: spaces.Box(-np.inf, np.inf, shape=(n,), dtype=np.float32) for k, n in GO_TO_TARGET_SIZES.items()}
    )
    latent_space = spaces.Box(-3.0, 3.0, (EMBED,))

    class TaskSpaces(gym.Env):
        observation_space, action_space = task_space, latent_space

    venv = VecNormalize(DummyVecEnv([TaskSpaces]), gamma=0.99, norm_obs=True, norm_reward=True)
    task_stats = running_stats(rng, GO_TO_TARGET_SIZES)
    venv.obs_rms = task_stats
    venv.ret_rms.var = np.float64(3.0)
    policy_kwargs = dict(
        net_arch=[dict(pi=[16, 16], vf=[16, 16])],
        activation_fn=torch.nn.Tanh,
        log_std_init=np.log(2.5),
        features_extractor_class=features_extractor.CmuHumanoidFeaturesExtractor,
        features_extractor_kwargs=dict(observable_keys=list(venv.observation_space.keys())),
    )
    ppo = PPO("MultiInputPolicy", venv, n_steps=64, batch_size=64, policy_kwargs=policy_kwargs)
    with torch.no_grad():  # random, not tiny, output weights: actions that differ across inputs
        ppo.policy.action_net.weight.normal_(0.0, 0.3)
    ppo.save(str(transfer_dir / "best_model.zip"))
    venv.save(str(transfer_dir / "vecnormalize.pkl"))
    loaded = sb3_utils.load_policy(str(transfer_dir), list(task_space.keys()), device="cpu")
    task_obs = observations(rng, task_stats, list(task_space.keys()), (BATCH,))
    expected.update({f"go_to_target_obs/{k}": v for k, v in task_obs.items()})
    expected["go_to_target/actions"] = loaded.predict(task_obs, deterministic=True)[0]

    np.savez(OUT / "expected.npz", **expected)
    for path in sorted(OUT.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(OUT)}: {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
