"""Bucketed, multi-dataset, multi-process batch order: pure Python and deterministic per ``(seed, epoch)``.

Every process computes the same global order and takes its own slice, so replicas never see the same sample in a
step and no communication is needed. Every micro-batch comes from one bucket of one dataset (one tensor shape). A
dataset's ``probability`` is the share of its batches used per epoch (a fresh random subset each epoch).

A bucket's incomplete remainder is dropped each epoch, unless ``pad_remainders`` (``disable_bucket_pruning``): then
it forms one more batch, topped up with that bucket's first samples in the epoch's shuffled order (cycling when the
bucket is smaller than the batch), so no image is left out and the order stays a function of ``(seed, epoch)``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from simpletuner_core.data.buckets import micro_batches
from simpletuner_core.data.config import DatasetConfig
from simpletuner_core.data.preflight import Sample


class BucketBatchSampler:
    """``batches(epoch)`` → this replica's micro-batches, as lists of indices into ``samples``."""

    def __init__(
        self,
        samples: Sequence[Sample],
        datasets: Sequence[DatasetConfig],
        batch_size: int,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        pad_remainders: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self._global = batch_size * num_replicas
        self.pad_remainders = pad_remainders
        # Only datasets that are sampled at all: enabled, probability > 0, with samples.
        by_dataset: dict[str, list[int]] = {}
        for i, sample in enumerate(samples):
            by_dataset.setdefault(sample.dataset_id, []).append(i)
        self._datasets: list[tuple[DatasetConfig, list[int]]] = [
            (ds, by_dataset[ds.id]) for ds in datasets
            if ds.probability > 0 and not ds.disabled and ds.id in by_dataset
        ]
        self._targets = [s.plan.target_size for s in samples]
        # Batches each dataset contributes per epoch: the same count every epoch (a different subset).
        self._counts = [
            micro_batches(Counter(self._targets[i] for i in indices).values(), ds.repeats, ds.probability,
                          self._global, pad_remainders)
            for ds, indices in self._datasets
        ]
        self._length = sum(self._counts)

    def __len__(self) -> int:
        return self._length

    def _global_batches(self, ds: DatasetConfig, indices: list[int], rng: random.Random) -> list[list[int]]:
        pool = indices * (1 + ds.repeats)
        rng.shuffle(pool)
        by_bucket: dict[tuple[int, int], list[int]] = {}
        for i in pool:
            by_bucket.setdefault(self._targets[i], []).append(i)
        out: list[list[int]] = []
        size = self._global
        for members in by_bucket.values():
            full = len(members) - len(members) % size
            out.extend(members[k:k + size] for k in range(0, full, size))
            if self.pad_remainders and full < len(members):  # else the incomplete remainder is dropped
                missing = size - (len(members) - full)
                out.append(members[full:] + [members[k % len(members)] for k in range(missing)])
        rng.shuffle(out)
        return out

    def batches(self, epoch: int) -> list[list[int]]:
        """Each dataset's share of its shuffled batches (see :func:`micro_batches`), uniformly interleaved.

        Probability already sets how many batches a dataset contributes, so the order is a plain shuffle: weighting
        the order by probability as well would push a rare dataset's batches to the end of the epoch.
        """
        rng = random.Random(f"{self.seed}:{epoch}")
        ordered = [
            batch
            for (ds, indices), count in zip(self._datasets, self._counts, strict=True)
            for batch in self._global_batches(ds, indices, rng)[:count]
        ]
        rng.shuffle(ordered)
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        return [batch[lo:hi] for batch in ordered]
