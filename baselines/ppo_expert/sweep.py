"""Train clip experts for a whole collection on Ray Tune: on this machine, or on a Ray cluster.

    .venv/bin/python baselines/ppo_expert/sweep.py --snippets CMU_016_22-0-82 CMU_009_12-0-210
    .venv/bin/python baselines/ppo_expert/sweep.py --snippet-list ../shared/cmu-mocap/clip_lists/shared_mocapact_snippets.txt
    .venv/bin/python baselines/ppo_expert/sweep.py --snippet-list LOCOMOTION_SMALL --address 10.0.0.5:6379

Each Ray Tune trial trains ``--experts-per-trial`` snippets together with ``train.py``'s
trainer (a function trainable: it reports every evaluation with a checkpoint and
restores from ``tune.get_checkpoint()``), then evaluates each expert with MoCapAct's
protocol. Experts land in ``<log-root>/<snippet>/<seed>/`` (MoCapAct's layout) as
``train.py`` writes them, plus ``final_evaluation.json``.

Nothing is lost: a failed trial is retried from its last checkpoint (``--max-failures``),
unless its failure cannot change on a retry (train.py refused its settings, exit status 2, or
the mocap data is missing where it ran): such a trial ends at once. Each trial's stderr is
kept in ``trial_stderr.log`` in its folder of ``<storage>/<name>/``; a failed trial's reason
and the end of that log are in the driver's output and the results table. A sweep that was
stopped resumes when the same command runs again, without retraining the snippets that
finished. At the end ``<storage>/<name>/results.md``, ``results.json`` and ``results.png``
give every snippet's figures.

Without ``--address`` Ray starts inside this process on this machine's cores. With it, the
trials get this process's mocap, rendering and cache settings and (``--ship-code``, the
default) this checkout's ``mocapact_envs`` and ``train.py`` through Ray's ``runtime_env``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train  # noqa: E402  (the trainer beside this file)

from mocapact_envs.files import write_json  # noqa: E402
from mocapact_envs.mocap.ids import resolve_snippets  # noqa: E402
from mocapact_envs.mocap.source import MocapSourceError  # noqa: E402
from mocapact_envs.mocap.trainable import PlannedSnippet, plan_snippets  # noqa: E402
from mocapact_envs.policies.run_layout import FINAL_EVALUATION_FILE, zoo_experts
from mocapact_envs.training.flag_checks import (  # noqa: E402
    FlagRule,
    check_flags,
    non_negative,
    positive,
    unset_or_positive,
)
from mocapact_envs.training.ray_cluster import (  # noqa: E402
    check_cpus_per_trial,
    check_ray_address,
    keep_loopback_addresses,
    local_cpus,
    own_ray_at_full_priority,
    parse_env_settings,
    stderr_to_file,
    tail,
    trial_env_vars,
)
from mocapact_envs.training.scripts import run_cli  # noqa: E402

#: Written in the sweep's storage folder: what it trains, so a rerun can tell it is the same sweep.
SWEEP_FILE = "sweep.json"
#: In each trial's folder of the sweep's storage folder: the trial's stderr (train.py's included).
TRIAL_STDERR_FILE = "trial_stderr.log"
#: A dry run's stand-in for final_evaluation.json in each run folder (no expert is trained).
DRY_RUN_FILE = "dry_run.json"
#: train.py's exit status for settings or data it refuses: a retry would fail the same way.
USAGE_ERROR = 2
#: What a trial checkpoint carries of each run folder (no TensorBoard logs).
CHECKPOINTED = (
    "checkpoint",
    "eval_rsi",
    "eval_start",
    "evaluations.json",
    "clip_info.json",
    "args.json",
    train.RELAY_WINDOWS_DIR,
    train.RELAY_CURVE_FILE,
)


@dataclass
class TrainerArgs(train.Args):
    """train.py's flags less those the sweep sets for each trial (its snippets, seed and log root): --trainer.clips
    (--clip), --trainer.seed and --trainer.log-root are neither listed by --help nor accepted."""

    clips: tyro.conf.Suppress[tuple[str, ...]] = ()
    seed: tyro.conf.Suppress[int] = 0
    log_root: tyro.conf.Suppress[str] = "runs/experts"


@dataclass
class Args:
    """Train experts for many snippets on Ray Tune; the same command resumes a stopped sweep."""

    snippets: tuple[str, ...] = ()
    """clip or snippet ids to train experts for"""
    snippet_list: str | None = None
    """a file of clip or snippet ids, one a line, or a dm_control subset name (LOCOMOTION_SMALL, ...)"""
    seed: int = 0
    """each expert's seed (names its run folder <log-root>/<snippet>/<seed>)"""
    log_root: str = "runs/experts"
    """root of the experts' MoCapAct layout; on a cluster, a folder every node reaches"""
    storage_path: str = "runs/sweeps"
    """where Ray Tune keeps the sweep's state, trial checkpoints and the final table"""
    name: str = "experts"
    """the sweep's name (a folder in --storage-path); rerunning with the same name resumes it"""
    address: str | None = None
    """a running Ray cluster's address (host:port, or "auto"); unset: a Ray of its own on this machine"""
    experts_per_trial: int = 1
    """snippets one trial trains together (train.py's --clips): more is faster per core"""
    cpus_per_trial: float = 1.0
    """CPUs Ray reserves for each trial"""
    max_concurrent: int | None = None
    """trials that run at once; unset: as many as the CPUs allow"""
    max_failures: int = 3
    """times a failed trial is retried from its last checkpoint"""
    skip_zoo: str | None = None
    """a zoo folder (`mocapact-zoo export`'s layout): snippets that already have an expert of this seed there are
    not trained (to go on where a sweep stopped without its run folders, e.g. on another machine)"""
    crop_uncovered: bool = False
    """train snippets that run past their converted clip's end on the part it covers (same start, the clip's last
    step as end), and snippets with steps the conversion flags as broken at either end without those steps, marked
    as cropped in the table; unset: such snippets are an error"""
    final_rsi_episodes: int = 1000
    """random-start episodes of each expert's final evaluation (MoCapAct: 1000)"""
    final_start_episodes: int = 100
    """snippet-start episodes of each expert's final evaluation (MoCapAct: 100)"""
    final_num_envs: int = 4
    """environments of the final evaluation"""
    ship_code: bool = True
    """with --address: send this checkout's mocapact_envs package and train.py to the cluster (Ray's runtime_env
    py_modules), so a node needs only the same .venv; --no-ship-code: nodes import their own checkout, which must be
    at this same path"""
    trial_env: tuple[str, ...] = ()
    """NAME=VALUE settings for the trials, over those sent from this shell (MOCAPACT_MOCAP_PATH, MOCAPACT_CACHE_DIR,
    MUJOCO_GL, HF_HUB_OFFLINE, ...), e.g. MOCAPACT_MOCAP_PATH=/data/cmu-mocap where the nodes keep the clips"""
    dry_run: bool = False
    """plan, start Ray and run every trial, reports, checkpoints, table and resume included, without training: each
    trial writes dry_run.json in its snippets' run folders (use a --log-root of its own); measures the driver's cost"""
    inject_failure_after: int | None = None
    """fault-tolerance drill: a trial's first attempt raises after this many evaluation reports"""
    trainer: TrainerArgs = field(default_factory=lambda: TrainerArgs(progress_bar=False))
    """the trainer's settings (train.py's flags, as --trainer.FLAG), but for its snippets, seed and log root: the
    sweep sets those from --snippets/--snippet-list, --seed and --log-root"""


def read_snippet_ids(args: Args) -> list[str]:
    ids = list(args.snippets)
    if args.snippet_list:
        ids += [s.id for s in resolve_snippets(args.snippet_list)]
    if not ids:
        raise ValueError("no snippet given: pass --snippets ids or --snippet-list FILE.")
    return list(dict.fromkeys(ids))


def run_dir(args: Args, snippet_id: str) -> Path:
    return Path(args.log_root).resolve() / snippet_id / str(args.seed)


def finished_file(args: Args, snippet_id: str) -> Path:
    return run_dir(args, snippet_id) / (DRY_RUN_FILE if args.dry_run else FINAL_EVALUATION_FILE)


def is_finished(args: Args, snippet_id: str) -> bool:
    return finished_file(args, snippet_id).is_file()


def copy_run_state(source: Path, target: Path) -> None:
    """The checkpointed parts of a run folder, copied (files replaced, folders merged)."""
    for name in CHECKPOINTED:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, target / name, dirs_exist_ok=True)
        elif path.is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / name)


def checkpoint_step(run: Path) -> int:
    path = run / "checkpoint" / "state.pt"
    if not path.is_file():
        return -1
    import torch

    return int(torch.load(path, weights_only=True)["global_step"])


def trial_folder() -> Path | None:
    """This trial's folder in the sweep's storage (a local or shared file system), or None elsewhere."""
    from ray import tune

    try:
        storage = tune.get_context().get_storage()
        if storage.storage_filesystem.type_name == "local":
            return Path(storage.trial_fs_path)
    except (AttributeError, RuntimeError):  # another Ray version
        pass
    return None


def train_trial(config: dict[str, Any]) -> None:
    """One Ray Tune trial: trains ``config["snippets"]`` together, then evaluates each expert.

    Its stderr goes to ``trial_stderr.log`` in the trial's folder meanwhile. A failure a retry cannot change
    (train.py's usage error, missing mocap data) ends the trial with a ``failure`` report instead of an error, so
    Tune does not retry it; any other error carries the end of that log to the driver.
    """
    from ray import tune

    folder = trial_folder()
    log = folder / TRIAL_STDERR_FILE if folder is not None else Path(tempfile.mkdtemp()) / TRIAL_STDERR_FILE
    try:
        with stderr_to_file(log):
            failure = run_trial(config["args"], config["snippets"])
    except MocapSourceError as error:
        failure = f"the mocap data is missing where the trial ran: {error}"
    except Exception as error:
        ended = tail(log)
        raise RuntimeError(f"{type(error).__name__}: {error}" + (f"\n{log} ends:\n{ended}" if ended else "")) from error
    if failure is not None:
        ended = tail(log)
        tune.report(
            {"snippet": config["snippets"][0], "failure": failure + (f"\n{log} ends:\n{ended}" if ended else "")}
        )


def run_trial(args: Args, snippet_ids: list[str]) -> str | None:
    """Trains and evaluates ``snippet_ids``; the failure that a retry could not change, or None."""
    from ray import tune

    runs = {s: run_dir(args, s) for s in snippet_ids}
    # Restore: a trial checkpoint newer than the run folder (another node wrote it, or the folder is gone) wins.
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            for snippet_id, run in runs.items():
                saved = Path(folder) / snippet_id
                if saved.is_dir() and checkpoint_step(saved) > checkpoint_step(run):
                    copy_run_state(saved, run)

    reports = 0

    def report(k: int, record: dict[str, Any]) -> None:
        nonlocal reports
        with tempfile.TemporaryDirectory() as folder:
            for snippet_id, run in runs.items():
                copy_run_state(run, Path(folder) / snippet_id)
            metrics = {
                "snippet": snippet_ids[k],
                "env_steps": record["global_step"],
                "training_minutes": record["training_minutes"],
                "rsi_norm_episode_length": record["eval_rsi"]["mean_norm_episode_length"],
                "rsi_norm_episode_return": record["eval_rsi"]["mean_norm_episode_return"],
                "start_norm_episode_length": record["eval_start"]["mean_norm_episode_length"],
            }
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        reports += 1
        if args.inject_failure_after is not None and restored is None and reports >= args.inject_failure_after:
            raise RuntimeError(f"injected failure after {reports} evaluation reports (--inject-failure-after)")

    todo = [s for s in snippet_ids if not is_finished(args, s)]
    if args.dry_run:
        dry_run(args, todo, lambda k, record: report(snippet_ids.index(todo[k]), record))
        return None
    if todo:
        trainer_args = dataclasses.replace(
            args.trainer, clips=tuple(todo), seed=args.seed, log_root=str(Path(args.log_root).resolve())
        )
        code = train.main(trainer_args, on_evaluation=lambda k, record: report(snippet_ids.index(todo[k]), record))
        if code == USAGE_ERROR:
            return f"train.py exited {code} for {todo}: it refused its settings or data"
        if code != 0:
            raise RuntimeError(f"train.py exited {code} for {todo}")
    final_evaluation(args, todo)
    return None


def dry_run(args: Args, snippet_ids: list[str], on_evaluation) -> None:
    """What a trial does around its training, without it: one evaluation report (with a checkpoint) per snippet,
    then dry_run.json in its run folder, shaped as final_evaluation.json with zero figures."""
    zero = {"mean_norm_episode_length": 0.0, "mean_norm_episode_return": 0.0, "episodes": 0}
    for k, snippet_id in enumerate(snippet_ids):
        run = run_dir(args, snippet_id)
        write_json(run / "evaluations.json", [{"global_step": 0, "training_minutes": 0.0}])
        on_evaluation(k, {"global_step": 0, "training_minutes": 0.0, "eval_rsi": zero, "eval_start": zero})
        write_json(
            run / DRY_RUN_FILE,
            {"snippet_id": snippet_id, "env_steps": 0, "training_minutes": 0.0, "eval_rsi": zero, "eval_start": zero},
        )


def final_evaluation(args: Args, snippet_ids: list[str]) -> None:
    """MoCapAct's evaluation of each expert's eval_rsi model, written to its run folder's final_evaluation.json."""
    from mocapact_envs.training.run_folder import write_final_evaluation

    episodes = {"eval_rsi": args.final_rsi_episodes, "eval_start": args.final_start_episodes}
    for snippet_id in snippet_ids:
        write_final_evaluation(
            run_dir(args, snippet_id), snippet_id, episodes, seed=args.seed, num_envs=args.final_num_envs
        )


def results_table(
    args: Args, planned: list[PlannedSnippet], failures: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """A row per snippet; one that did not finish says why (``failures``: a failed trial's reason, by snippet)."""
    failures = failures or {}
    rows = []
    for p in planned:
        path = finished_file(args, p.snippet_id)
        row: dict[str, Any] = {"snippet": p.requested, "trained_on": p.snippet_id, "cropped": p.cropped}
        if path.is_file():
            final = json.loads(path.read_text())
            row.update(env_steps=final["env_steps"], training_minutes=round(final["training_minutes"], 1))
            for kind, label in (("eval_rsi", "rsi"), ("eval_start", "start")):
                if kind in final:
                    row[f"{label}_norm_length"] = round(final[kind]["mean_norm_episode_length"], 3)
                    row[f"{label}_norm_return"] = round(final[kind]["mean_norm_episode_return"], 3)
                    row[f"{label}_episodes"] = final[kind]["episodes"]
        elif p.snippet_id in failures:
            row["missing"] = f"failed: {reason_line(failures[p.snippet_id])}"
            row["failure"] = failures[p.snippet_id]
        else:
            row["missing"] = "not finished"
        rows.append(row)
    return rows


def reason_line(failure: str) -> str:
    """A failure's telling line for a table cell: the trial log's last ``error:`` line, else the first line."""
    lines = [line.strip() for line in failure.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    line = errors[-1] if errors else lines[0] if lines else "unknown"
    return line.replace("|", "/")[:300]


def write_results(folder: Path, rows: list[dict[str, Any]]) -> None:
    write_json(folder / "results.json", rows)
    columns = ("snippet", "env_steps", "training_minutes", "rsi_norm_length", "rsi_norm_return")
    columns += ("start_norm_length", "start_norm_return")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        name = row["snippet"] + (f" (cropped to {row['trained_on']})" if row["cropped"] else "")
        if "missing" in row:
            cells = [name, row["missing"]] + [""] * (len(columns) - 2)
        else:
            cells = [name] + [str(row.get(c, "")) for c in columns[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    done = [r for r in rows if "rsi_norm_length" in r]
    if done:
        lengths = np.array([r["rsi_norm_length"] for r in done])
        lines += [
            "",
            f"{len(done)} of {len(rows)} snippets evaluated; normalized length from random starts: median "
            f"{np.median(lengths):.3f}, {np.mean(lengths >= 0.8):.0%} at least 0.8.",
        ]
    (folder / "results.md").write_text("\n".join(lines) + "\n")
    if done:
        from mocapact_envs.evaluation.plotting import save_figure, subplots

        figure, axes = subplots(1, 2, figsize=(10, 4))
        for ax, (label, key) in zip(axes, (("random starts", "rsi"), ("snippet starts", "start")), strict=True):
            values = [r[f"{key}_norm_length"] for r in done if f"{key}_norm_length" in r]
            ax.hist(values, bins=np.linspace(0, 1, 21), color="tab:blue", alpha=0.8)
            ax.set_xlabel(f"normalized episode length, {label}")
            ax.set_ylabel("experts")
            ax.grid(alpha=0.3)
        save_figure(figure, folder / "results.png", title=f"{len(done)} experts")


#: Each numeric flag's rule, checked before anything is planned, started or written.
ARG_RULES: dict[str, FlagRule] = {
    "experts_per_trial": (positive, "a positive number of snippets"),
    "cpus_per_trial": (positive, "a positive number of CPUs (fractions share a CPU)"),
    "max_concurrent": (unset_or_positive, "unset (as many as the CPUs allow) or a positive number"),
    "max_failures": (lambda v: v == -1 or non_negative(v), "0 or more retries (-1: retry forever)"),
    "final_rsi_episodes": (non_negative, "0 or more episodes"),
    "final_start_episodes": (non_negative, "0 or more episodes"),
    "final_num_envs": (positive, "a positive number of environments"),
}


def on_cluster(args: Args) -> bool:
    return args.address not in (None, "local")


def trial_runtime_env(args: Args) -> dict[str, Any]:
    """What every trial gets from this process (Ray's ``runtime_env``): a cluster's trials start from the
    environment of their node's ``ray start``, not from this shell."""
    env_vars = {"RAY_CHDIR_TO_TRIAL_DIR": "0", **trial_env_vars(parse_env_settings(args.trial_env, "--trial-env"))}
    here = Path(__file__).resolve().parent
    if on_cluster(args) and args.ship_code:
        # The driver's own code, whatever checkout (if any) a node has: the package and the trainer beside this file.
        import mocapact_envs

        package = Path(mocapact_envs.__file__).resolve().parent
        return {
            "env_vars": env_vars,
            "py_modules": [str(package), str(here / "train.py")],
            "excludes": ["__pycache__", "*.pyc"],
        }
    # Trials import train.py from this folder and keep the working directory (relative paths stay valid).
    env_vars["PYTHONPATH"] = os.pathsep.join(p for p in (str(here), os.environ.get("PYTHONPATH")) if p)
    return {"env_vars": env_vars}


def trial_failures(results) -> dict[tuple[str, ...], tuple[str, bool]]:
    """Each failed trial's snippets: its reason (with the end of its stderr log) and whether it was retried."""
    failures = {}
    for result in results:
        group = tuple(result.config["snippets"])
        if result.error is not None:
            cause = getattr(result.error, "cause", None)
            if isinstance(cause, BaseException):  # the trial raised: its message carries the end of its log
                reason = str(cause) if type(cause) is RuntimeError else f"{type(cause).__name__}: {cause}"
            else:  # the trial died without raising (its worker was killed, its node lost): what it wrote last
                lines = [line.strip() for line in str(result.error).splitlines() if line.strip()]
                reason = " ".join(lines[:3]) or type(result.error).__name__
                log = Path(result.path) / TRIAL_STDERR_FILE if result.path else None
                ended = tail(log) if log is not None else ""
                if ended:
                    reason += f"\n{log} ends:\n{ended}"
            failures[group] = (reason, True)
        elif result.metrics and result.metrics.get("failure"):
            failures[group] = (result.metrics["failure"], False)
    return failures


def main(args: Args) -> int:
    began = time.perf_counter()
    try:
        check_flags(args, ARG_RULES)
        if args.final_rsi_episodes + args.final_start_episodes == 0:
            raise ValueError("--final-rsi-episodes and --final-start-episodes are both 0: nothing would evaluate.")
        parse_env_settings(args.trial_env, "--trial-env")
        if not on_cluster(args):
            check_cpus_per_trial(args.cpus_per_trial, local_cpus(), "this machine")
        else:
            keep_loopback_addresses(args.address)  # before Ray is imported: 127.0.0.1 stays 127.0.0.1
            check_ray_address(args.address)
        planned = plan_snippets(read_snippet_ids(args), crop=args.crop_uncovered)
        if args.skip_zoo:
            in_zoo = {(e.listed_id, e.seed) for e in zoo_experts(args.skip_zoo)}
            skipped = [p for p in planned if (p.requested, str(args.seed)) in in_zoo]
            planned = [p for p in planned if p not in skipped]
            print(f"{len(skipped)} snippet(s) already have an expert in {args.skip_zoo}: not trained.")
    except (ValueError, FileNotFoundError, MocapSourceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    import ray
    from ray import tune

    storage = Path(args.storage_path).resolve()
    sweep_folder = storage / args.name
    snippet_ids = [p.snippet_id for p in planned]
    finished = [s for s in snippet_ids if is_finished(args, s)]
    todo = [s for s in snippet_ids if s not in finished]
    groups = [todo[i : i + args.experts_per_trial] for i in range(0, len(todo), args.experts_per_trial)]
    print(f"{len(snippet_ids)} snippets: {len(finished)} finished, {len(todo)} to train in {len(groups)} trials.")
    planned_at = time.perf_counter()
    failures: dict[tuple[str, ...], tuple[str, bool]] = {}

    if groups:
        os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
        own_ray_at_full_priority(args.address)
        try:
            ray.init(
                address=args.address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                runtime_env=trial_runtime_env(args),
            )
        except ConnectionError as error:
            print(f"error: Ray could not connect to --address {args.address}: {error}", file=sys.stderr)
            return 2
        try:
            if on_cluster(args):
                # A trial's CPUs must fit on one node, or Ray leaves it PENDING forever.
                nodes = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
                try:
                    check_cpus_per_trial(
                        args.cpus_per_trial,
                        max(nodes, default=0),
                        f"the cluster's largest node ({len(nodes)} nodes, {sum(nodes):g} CPUs in all)",
                    )
                except ValueError as error:
                    print(f"error: {error}", file=sys.stderr)
                    return 2
            resources = ray.cluster_resources().get("CPU", 1)
            max_concurrent = args.max_concurrent or max(1, math.floor(resources / args.cpus_per_trial))
            trainable = tune.with_resources(train_trial, {"cpu": args.cpus_per_trial})
            param_space = {"args": args, "snippets": tune.grid_search(groups)}
            previous = (
                json.loads((sweep_folder / SWEEP_FILE).read_text()) if (sweep_folder / SWEEP_FILE).is_file() else None
            )
            if (
                previous is not None
                and previous["groups"] == groups
                and not previous.get("completed")
                and tune.Tuner.can_restore(str(sweep_folder))
            ):
                # The same sweep, stopped part-way: Tune resumes its unfinished and failed trials.
                print(f"resuming the sweep in {sweep_folder}")
                tuner = tune.Tuner.restore(str(sweep_folder), trainable, resume_errored=True, param_space=param_space)
            else:
                if previous is not None:
                    # Other trials than last time (some finished, the list changed), or a sweep that ran to its
                    # end: a fresh Tune experiment; the experts' own checkpoints still resume each snippet.
                    shutil.rmtree(sweep_folder, ignore_errors=True)
                tuner = tune.Tuner(
                    trainable,
                    param_space=param_space,
                    tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
                    run_config=tune.RunConfig(
                        name=args.name,
                        storage_path=str(storage),
                        failure_config=tune.FailureConfig(max_failures=args.max_failures),
                        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                        verbose=1,
                    ),
                )
            sweep_folder.mkdir(parents=True, exist_ok=True)
            state = {"groups": groups, "seed": args.seed, "log_root": args.log_root, "completed": False}
            write_json(sweep_folder / SWEEP_FILE, state)
            results = tuner.fit()
            failures = trial_failures(results)
            if results.num_terminated + results.num_errors == len(results):
                write_json(sweep_folder / SWEEP_FILE, {**state, "completed": True})
        finally:
            ray.shutdown()
        if failures:
            print(f"{len(failures)} trial(s) failed:", file=sys.stderr)
            for group, (reason, retried) in failures.items():
                how = f"after {args.max_failures} retries" if retried else "not retried: a retry cannot change it"
                print(f"  {' '.join(group)} ({how}): " + reason.replace("\n", "\n    "), file=sys.stderr)
    trained_at = time.perf_counter()

    sweep_folder.mkdir(parents=True, exist_ok=True)
    by_snippet = {s: reason for group, (reason, _) in failures.items() for s in group}
    rows = results_table(args, planned, by_snippet)
    write_results(sweep_folder, rows)
    print((sweep_folder / "results.md").read_text())
    print(f"results: {sweep_folder / 'results.md'}, results.json, results.png")
    print(
        f"driver: {planned_at - began:.1f} s planning {len(snippet_ids)} snippets, {trained_at - planned_at:.1f} s "
        f"for {len(groups)} trials, {time.perf_counter() - trained_at:.1f} s writing the table; "
        f"{time.process_time():.1f} CPU seconds in this process"
        + (" (dry run: nothing was trained)" if args.dry_run else "")
    )
    return 0 if all("missing" not in r for r in rows) else 1


if __name__ == "__main__":
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    sys.exit(run_cli(main, Args))
