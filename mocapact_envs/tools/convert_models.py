"""``mocapact-convert-models``: MoCapAct's published models (a download, ``.ckpt`` files or transfer-policy
folders) converted into this package's pickle-free formats.

Multi-clip policies, GPTs and decoders convert by :mod:`mocapact_envs.policies.mocapact_checkpoints` (which
reads MoCapAct's files with allow-list unpicklers); transfer-task policies, SB3 zips over a task environment,
convert here into the task-policy directory of :mod:`mocapact_envs.training.task_policies`.

    mocapact-convert-models mocapact_data/ --output mocapact_data/converted
"""

from __future__ import annotations

import argparse
import pickle
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mocapact_envs.files import write_json
from mocapact_envs.policies.low_level import activation_name
from mocapact_envs.policies.mocapact_checkpoints import (
    LOW_LEVEL_DIR,
    OBSERVABLE_ALIASES,
    REPORT_FILE,
    TRANSFER_FILES,
    ConversionError,
    convert_checkpoint,
    copy_parameters,
    low_level_policy_from_checkpoint,
    read_sb3_zip,
)
from mocapact_envs.policies.sb3_compat import ConcatKeysExtractor, load_vecnormalize, policy_kwargs_from_saved
from mocapact_envs.tasks.tracking_settings import DEFAULT_MAX_LATENT
from mocapact_envs.training.task_policies import (
    make_transfer_env,
    policy_class,
    policy_kwargs_from_json,
    save_task_policy,
)


def _net_arch(net_arch: Any, source: str) -> dict[str, list[int]]:
    """SB3 1.x's ``[dict(pi=..., vf=...)]`` as SB3 2.x's ``dict(pi=..., vf=...)``; shared layers refused."""
    if isinstance(net_arch, list) and len(net_arch) == 1 and isinstance(net_arch[0], Mapping):
        net_arch = net_arch[0]
    if not isinstance(net_arch, Mapping) or set(net_arch) != {"pi", "vf"}:
        raise ConversionError(f"{source}: net_arch {net_arch!r} is not separate policy and value networks.")
    return {"pi": [int(s) for s in net_arch["pi"]], "vf": [int(s) for s in net_arch["vf"]]}


def _task_of(keys: Sequence[str], source: str) -> str:
    if "task/velocity_command" in keys:
        return "velocity_control"
    if "walker/target" in keys:
        return "go_to_target"
    raise ConversionError(
        f"{source} observes {list(keys)}: neither GoToTarget ('walker/target') nor VelocityControl "
        "('target_obs'). A clip expert? Load those with mocapact_envs.policies.expert_files.load_expert."
    )


def _task_policy_kwargs(saved_kwargs: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The JSON ``policy_kwargs`` of :mod:`mocapact_envs.training.task_policies` for MoCapAct's PPO policy."""
    activation = activation_name(saved_kwargs.get("activation_fn", torch.nn.Tanh))
    if activation is None:
        raise ConversionError(f"{source}: activation {saved_kwargs.get('activation_fn')} has no counterpart.")
    if saved_kwargs.get("use_sde") or saved_kwargs.get("squash_output"):
        raise ConversionError(f"{source}: gSDE or squashed policies have no counterpart here.")
    return {
        "net_arch": _net_arch(saved_kwargs.get("net_arch"), source),
        "activation_fn": activation,
        "log_std_init": float(saved_kwargs.get("log_std_init", 0.0)),
        "ortho_init": False,  # the weights are MoCapAct's; an orthogonal init first would only cost time
    }


def _reorder_observation_columns(
    weights: Mapping[str, torch.Tensor],
    mocapact_keys: Sequence[str],
    keys: Sequence[str],
    widths: Mapping[str, int],
    source: str,
) -> dict[str, torch.Tensor]:
    """The first layers' input columns moved from MoCapAct's concatenation order to SB3's (the Dict's) order."""
    offsets = np.cumsum([0] + [widths[k] for k in mocapact_keys])
    start = dict(zip(mocapact_keys, offsets[:-1], strict=True))
    columns = torch.as_tensor(np.concatenate([np.arange(start[k], start[k] + widths[k]) for k in keys]))
    mapped = dict(weights)
    for net in ("policy_net", "value_net"):
        name = f"mlp_extractor.{net}.0.weight"
        if name not in mapped or mapped[name].shape[1] != len(columns):
            raise ConversionError(f"{source}: {name} does not read the {len(columns)}-value observation.")
        mapped[name] = mapped[name][:, columns]
    return mapped


def sb3_policy_from_mocapact(
    weights: Mapping[str, torch.Tensor],
    saved_kwargs: Mapping[str, Any],
    mocapact_keys: Sequence[str],
    observation_space,
    action_space,
    source: str = "the policy",
):
    """SB3's PPO policy over ``observation_space`` (a Dict) with MoCapAct's weights; and its JSON kwargs.

    ``mocapact_keys`` is the order MoCapAct's extractor concatenated the observables in
    (this package's names); the first layers' columns are moved to the Dict's order.
    """
    json_kwargs = _task_policy_kwargs(saved_kwargs, source)
    policy = policy_class("ppo")(
        observation_space, action_space, lambda _progress: 0.0, **policy_kwargs_from_json(json_kwargs)
    )
    widths = {k: int(np.prod(s.shape)) for k, s in observation_space.spaces.items()}
    mapped = _reorder_observation_columns(weights, mocapact_keys, list(observation_space.spaces), widths, source)
    copy_parameters(policy, mapped, source)
    policy.set_training_mode(False)
    return policy, json_kwargs


def convert_transfer_policy(model_dir: str | Path, output_dir: str | Path) -> dict[str, Any]:
    """Converts a MoCapAct transfer-policy directory into a task-policy directory at ``output_dir``.

    The observation layout (MoCapAct's keys, renamed where this package names them
    otherwise, and widths) is checked against this package's task environment, built here.
    """
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    zip_path, vec_path, low_level_path = (model_dir / n for n in (*TRANSFER_FILES, "low_level_policy.ckpt"))
    data, weights = read_sb3_zip(zip_path)
    try:
        saved_kwargs = policy_kwargs_from_saved(data.get("policy_kwargs", {}))
        vec_normalize = load_vecnormalize(vec_path)
    except (ValueError, pickle.UnpicklingError, OSError, EOFError) as error:
        raise ConversionError(f"{model_dir}: {error}") from error
    obs_rms = {OBSERVABLE_ALIASES.get(k, k): rms for k, rms in dict(vec_normalize.obs_rms).items()}
    if saved_kwargs.get("features_extractor_class") is ConcatKeysExtractor:
        mocapact_keys = list(saved_kwargs["features_extractor_kwargs"]["observable_keys"])
    else:
        mocapact_keys = sorted(vec_normalize.obs_rms)  # SB3's CombinedExtractor: the Dict's (sorted) order
    keys = [OBSERVABLE_ALIASES.get(k, k) for k in mocapact_keys]
    widths = {k: int(np.prod(np.shape(obs_rms[k].mean))) for k in keys if k in obs_rms}
    task = _task_of(keys, str(zip_path))

    output_dir.mkdir(parents=True, exist_ok=True)
    low_level_dir = None
    if low_level_path.is_file():
        low_level_dir = output_dir / LOW_LEVEL_DIR
        low_level_policy_from_checkpoint(low_level_path).save(low_level_dir)
    env = make_transfer_env(task, low_level_policy=low_level_dir)
    try:
        space, action_space = env.observation_space, env.action_space
    finally:
        env.close()
    env_widths = {k: int(np.prod(s.shape)) for k, s in space.spaces.items()}
    if set(keys) != set(env_widths) or any(widths.get(k, env_widths[k]) != env_widths[k] for k in keys):
        raise ConversionError(
            f"{model_dir}: MoCapAct's observation ({', '.join(f'{k}: {widths.get(k)}' for k in keys)}) is not "
            f"this package's {task} observation ({', '.join(f'{k}: {n}' for k, n in env_widths.items())})."
        )

    policy, json_kwargs = sb3_policy_from_mocapact(weights, saved_kwargs, keys, space, action_space, str(zip_path))
    statistics = types.SimpleNamespace(
        obs_rms=obs_rms,
        ret_rms=vec_normalize.ret_rms,
        returns=np.asarray(vars(vec_normalize).get("returns", np.zeros(1))),  # not pickled by SB3
        norm_obs=bool(vec_normalize.norm_obs),
        norm_reward=bool(vec_normalize.norm_reward),
        clip_obs=float(vec_normalize.clip_obs),
        clip_reward=float(vec_normalize.clip_reward),
        gamma=float(vec_normalize.gamma),
        epsilon=float(vec_normalize.epsilon),
    )
    save_task_policy(
        output_dir,
        types.SimpleNamespace(policy=policy),
        "ppo",
        json_kwargs,
        {"task": task, "low_level_policy": low_level_dir, "max_latent": DEFAULT_MAX_LATENT, "env_kwargs": {}},
        vec_normalize=statistics,
        metadata={"converted_from": str(model_dir), "mocapact_observable_keys": mocapact_keys},
    )
    written = {"task_policy": str(output_dir)}
    if low_level_dir is not None:
        written[LOW_LEVEL_DIR] = str(low_level_dir)
    return {"source": str(model_dir), "kind": f"transfer:{task}", "written": written}


# -- whole downloads ----------------------------------------------------------------------------


def find_convertible(root: str | Path) -> list[tuple[str, Path]]:
    """``("checkpoint", file)`` for each ``.ckpt`` and ``("transfer", dir)`` for each transfer-policy directory.

    A transfer directory's ``low_level_policy.ckpt`` is converted with it, not on its own.
    Clip experts (``clip_info.json`` beside their run) are left to ``load_expert``.
    """
    root = Path(root)
    found: list[tuple[str, Path]] = []
    transfer_dirs = {p.parent for p in root.rglob(TRANSFER_FILES[0]) if (p.parent / TRANSFER_FILES[1]).is_file()}
    for directory in sorted(transfer_dirs):
        if not any((parent / "clip_info.json").is_file() for parent in (directory, *directory.parents[:3])):
            found.append(("transfer", directory))
    for path in sorted(root.rglob("*.ckpt")):
        if not (path.name == "low_level_policy.ckpt" and path.parent in transfer_dirs):
            found.append(("checkpoint", path))
    return found


def convert_directory(root: str | Path, output: str | Path, log=print) -> dict[str, Any]:
    """Converts everything :func:`find_convertible` finds under ``root`` into ``output`` (same relative layout).

    A file that does not convert is reported with its reason and the rest go on. The
    report is also written to ``output/conversion_report.json``.
    """
    root, output = Path(root), Path(output)
    converted, failed = [], []
    for what, path in find_convertible(root):
        relative = path.relative_to(root)
        destination = output / (relative.with_suffix("") if what == "checkpoint" else relative)
        if output.resolve() in path.resolve().parents:
            continue  # an earlier conversion's output
        try:
            if what == "checkpoint":
                result = convert_checkpoint(path, destination)
            else:
                result = convert_transfer_policy(path, destination)
        except (ConversionError, FileNotFoundError) as error:
            failed.append({"source": str(path), "error": str(error)})
            log(f"  not converted: {error}")
            continue
        converted.append(result)
        log(f"  {result['kind']}: {path} -> {', '.join(result['written'].values())}")
    report = {"root": str(root), "converted": converted, "failed": failed}
    write_json(output / REPORT_FILE, report)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mocapact-convert-models", description=__doc__.split("\n\n")[0].replace("``", "")
    )
    parser.add_argument(
        "sources", nargs="+", type=Path, help="downloaded folders, .ckpt files or transfer-policy folders"
    )
    parser.add_argument("--output", type=Path, required=True, help="where the converted policies go")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    failures = 0
    for source in args.sources:
        try:
            if source.is_file():
                result = convert_checkpoint(source, args.output / source.stem)
                print(f"{result['kind']}: {source} -> {', '.join(result['written'].values())}")
            elif all((source / name).is_file() for name in TRANSFER_FILES):
                result = convert_transfer_policy(source, args.output / source.name)
                print(f"{result['kind']}: {source} -> {', '.join(result['written'].values())}")
            elif source.is_dir():
                if not find_convertible(source):
                    raise ConversionError(
                        f"{source} holds nothing to convert: no .ckpt file and no transfer-policy folder "
                        f"({' + '.join(TRANSFER_FILES)})."
                    )
                failures += len(convert_directory(source, args.output)["failed"])
            else:
                raise ConversionError(f"{source} does not exist.")
        except ConversionError as error:
            print(f"mocapact-convert-models: error: {error}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
