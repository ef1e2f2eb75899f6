"""Samples per second of ``ExpertDataset`` against a naive on-demand HDF5 reader, on the same files.

Both serve the same windows (``--seq-steps`` observations of the ``high_level``
set, mean actions, weights) through a torch ``DataLoader`` with shuffling, batch
``--batch-size``: ``ExpertDataset`` with its own ``collate_fn`` (the gathered
batch as tensors) and with torch's default collate (which stacks the samples
again). The naive reader is MoCapAct's default access pattern: each
``__getitem__`` opens the episode's HDF5 file with h5py and reads that window's
slices (observations, actions), then picks the observable columns.
``ExpertDataset`` reads everything once and gathers whole batches in memory; its
one-off loading time is printed separately.

Rollout files: given with ``--rollouts`` (files or folders), or collected first
from the experts under ``--experts`` with the package's collector into a
temporary folder. Generated episodes run to the snippet end (no early
termination), so untrained experts still give windows of 30 steps.

    python benchmarks/dataset_throughput.py --rollouts rollouts/
    python benchmarks/dataset_throughput.py --experts runs/experts --n-start-rollouts 10 --n-rsi-rollouts 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from mocapact_envs.datasets import ExpertDataset, RolloutFiles
from mocapact_envs.datasets.rollouts import expand_rollout_paths
from mocapact_envs.tasks.observables import resolve_observables


class NaiveWindows(torch.utils.data.Dataset):
    """Windows of ``seq_steps`` read from the HDF5 files on demand, opening the file per item."""

    def __init__(self, paths, observables: str, seq_steps: int):
        self.files = RolloutFiles(paths)
        self.columns = [self.files.observable_indices[k] for k in resolve_observables(observables)]
        self.seq_steps = seq_steps
        self.windows = [
            (ref.file_index, ref.group, start)
            for ref in self.files.episodes
            for start in range(ref.length - seq_steps + 1)
        ]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int):
        file_index, group, start = self.windows[index]
        stop = start + self.seq_steps
        with h5py.File(self.files.paths[file_index], "r") as h5:
            proprio = h5[f"{group}/observations/proprioceptive"][start:stop]
            actions = h5[f"{group}/mean_actions"][start:stop]
        observation = np.concatenate([proprio[:, c] for c in self.columns], axis=-1).astype(np.float32)
        return observation, actions.astype(np.float32), np.ones(self.seq_steps, np.float32)


def samples_per_second(
    dataset, batch_size: int, seconds: float, num_workers: int, collate_fn=None, seed: int = 0
) -> float:
    """Windows delivered per second by a DataLoader sampling ``dataset`` at random, timed for about ``seconds``.

    Sampling with replacement, as training does, also fills batches from datasets smaller than one.
    """
    generator = torch.Generator().manual_seed(seed)
    sampler = torch.utils.data.RandomSampler(
        dataset, replacement=True, num_samples=100 * batch_size, generator=generator
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate_fn
    )
    samples, started = 0, time.perf_counter()
    while True:
        for observations, _, _ in loader:
            samples += observations.shape[0]
            if time.perf_counter() - started >= seconds:
                return samples / (time.perf_counter() - started)


def collect_rollouts(expert_dirs, output_dir: Path, n_start: int, n_rsi: int, seed: int) -> list[Path]:
    from mocapact_envs.datasets.collect import RolloutSettings, collect
    from mocapact_envs.policies.run_layout import find_experts

    search = find_experts(expert_dirs)
    if not search.runs_by_clip:
        raise SystemExit(f"no experts (clip_info.json with eval_rsi/model) under {', '.join(map(str, expert_dirs))}")
    # No early termination: episodes span their snippet, so long windows exist even for weak experts.
    settings = RolloutSettings(
        n_start_rollouts=n_start, n_rsi_rollouts=n_rsi, termination_error_threshold=1e9, seed=seed
    )
    print(f"collecting {n_start} + {n_rsi} rollouts of {search.num_snippets} snippet experts into {output_dir} ...")
    return collect(search.runs_by_clip, output_dir, settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--rollouts", nargs="+", type=Path, help="rollout files or folders of CMU_*.hdf5")
    source.add_argument("--experts", nargs="+", type=Path, help="expert folders to collect rollouts from first")
    parser.add_argument("--n-start-rollouts", type=int, default=10)
    parser.add_argument("--n-rsi-rollouts", type=int, default=10)
    parser.add_argument("--observables", default="high_level", help="observation set the datasets return")
    parser.add_argument("--seq-steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=5.0, help="time spent measuring each reader")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="mocapact-throughput-") as tmp:
        if args.experts:
            paths = collect_rollouts(args.experts, Path(tmp), args.n_start_rollouts, args.n_rsi_rollouts, args.seed)
        else:
            paths = expand_rollout_paths(args.rollouts)

        started = time.perf_counter()
        fast = ExpertDataset(paths, args.observables, seq_steps=args.seq_steps)
        load_seconds = time.perf_counter() - started
        naive = NaiveWindows(paths, args.observables, args.seq_steps)
        assert len(naive) == len(fast), (len(naive), len(fast))
        steps = sum(ref.length for ref in fast.files.episodes)
        print(
            f"{len(paths)} file(s), {len(fast.files.episodes)} episodes, {steps} steps; {len(fast)} windows of "
            f"{args.seq_steps} steps, {fast.observation_size} observation dims; batch {args.batch_size}, "
            f"{args.num_workers} DataLoader workers"
        )
        measure = lambda dataset, collate_fn=None: samples_per_second(  # noqa: E731
            dataset, args.batch_size, args.seconds, args.num_workers, collate_fn, args.seed
        )
        fast_rate = measure(fast, ExpertDataset.collate)
        default_collate_rate = measure(fast)
        naive_rate = measure(naive)
    print(
        f"ExpertDataset, collate_fn=ExpertDataset.collate: {fast_rate:10,.0f} samples/s ({load_seconds:.1f} s to load)"
    )
    print(f"ExpertDataset, torch's default collate:          {default_collate_rate:10,.0f} samples/s")
    print(f"naive h5py reader, default collate:              {naive_rate:10,.0f} samples/s")
    print(f"ratio (ExpertDataset.collate / naive):           {fast_rate / naive_rate:10.1f}x")
    print(f"ratio (default collate / naive):                 {default_collate_rate / naive_rate:10.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
