"""Feeding a stage: the step-indexed batch order (a function of the step alone, so resume needs only
the step count), optional modality-length grouping, and the torch DataLoader that decodes in worker
processes, pins host memory and copies to the device without blocking."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Sampler

from trainers.spec import StageSpec


class LoaderError(ValueError):
    """A data-loading setting that cannot be honoured (one line naming the field)."""


@dataclass(frozen=True)
class LoaderOptions:
    num_workers: int = 0
    group_by_length: bool = False  # modality-length grouping of each global batch's micro batches


def rank_micro_batches(n_items: int, step: int, hp: StageSpec, env, *, accum: int, seed: int,
                       lengths: Sequence[int] | None = None) -> list[list[int]]:
    """This rank's micro batches for optimizer step `step`: a permutation per epoch (seeded), cut into
    global batches. With `lengths` (signed: negative for text-only records) the global batch is sorted
    by modality then length and dealt round-robin to (rank, micro batch), so micro batches hold
    similar lengths and ranks similar work; the global batch itself is the same either way."""
    per_epoch = n_items // hp.global_batch_size
    epoch, k = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n_items, generator=gen)
    batch = perm[k * hp.global_batch_size:(k + 1) * hp.global_batch_size].tolist()
    mb, rank = hp.micro_batch_size, env.rank
    if lengths is None:
        mine = batch[rank * accum * mb:(rank + 1) * accum * mb]
        return [mine[i * mb:(i + 1) * mb] for i in range(accum)]
    ordered = sorted(batch, key=lambda j: (lengths[j] > 0, abs(lengths[j]), j))
    groups = [ordered[g * mb:(g + 1) * mb] for g in range(env.world_size * accum)]
    return groups[rank::env.world_size]


class StepBatchSampler(Sampler[list[int]]):
    """Micro batches of steps start..steps-1 for one rank (`env`: .rank, .world_size), in the order
    rank_micro_batches gives."""

    def __init__(self, n_items: int, hp: StageSpec, env, *, accum: int, seed: int, start: int, steps: int,
                 lengths: Sequence[int] | None = None) -> None:
        self.args = (n_items, hp, env, accum, seed)
        self.start, self.steps, self.accum, self.lengths = start, steps, accum, lengths

    def __len__(self) -> int:
        return max(0, self.steps - self.start) * self.accum

    def __iter__(self) -> Iterator[list[int]]:
        n, hp, env, accum, seed = self.args
        for step in range(self.start, self.steps):
            yield from rank_micro_batches(n, step, hp, env, accum=accum, seed=seed, lengths=self.lengths)


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors to `device` (non-blocking: the loader pinned them on GPU runs); other values as they are."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def check_workers(num_workers: int) -> None:
    """num_workers is used or is an error (never quietly 0): a daemonic process cannot have children."""
    import multiprocessing

    if num_workers < 0:
        raise LoaderError(f"data.num_workers must be >= 0, got {num_workers}")
    if num_workers and multiprocessing.current_process().daemon:
        raise LoaderError(f"data.num_workers={num_workers}: this process is daemonic and cannot start DataLoader "
                          "workers; use data.num_workers: 0 here")


def stage_batches(dataset, collate_fn, sampler: StepBatchSampler, *, options: LoaderOptions, seed: int,
                  device: torch.device) -> Iterator[dict]:
    """Device batches in the sampler's order, decoded by `options.num_workers` processes."""
    check_workers(options.num_workers)
    if len(sampler) == 0:
        return iter(())
    on_gpu = device.type == "cuda"
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=options.num_workers,
                        pin_memory=on_gpu, generator=torch.Generator().manual_seed(seed),
                        prefetch_factor=4 if options.num_workers else None)
    return (to_device(b, device) for b in loader)
