"""Bucket batch sampler: deterministic, single-bucket batches, repeats, probabilities and replica slices."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from simpletuner_core.data.buckets import ImagePlan, micro_batches
from simpletuner_core.data.config import DatasetConfig
from simpletuner_core.data.preflight import Sample
from simpletuner_core.data.sampler import BucketBatchSampler


def sample(dataset_id: str, i: int, size: tuple[int, int]) -> Sample:
    plan = ImagePlan(resize_to=size, crop_box=(0, 0, *size), target_size=size)
    return Sample(dataset_id, f"/data/{dataset_id}/{i}.png", f"caption {i}", size, plan, i)


def make(**datasets: dict[str, Any]) -> tuple[list[Sample], list[DatasetConfig]]:
    """``name={"square": n, "wide": m, ...config}`` → samples in 64x64 and 128x64 buckets, and configs."""
    samples: list[Sample] = []
    configs = []
    for name, spec in datasets.items():
        spec = dict(spec)
        square, wide = spec.pop("square", 0), spec.pop("wide", 0)
        samples += [sample(name, i, (64, 64)) for i in range(square)]
        samples += [sample(name, square + i, (128, 64)) for i in range(wide)]
        configs.append(DatasetConfig(id=name, instance_data_dir=name, **spec))
    return samples, configs


def test_deterministic_per_seed_and_epoch() -> None:
    samples, configs = make(a={"square": 20, "wide": 12}, b={"square": 9})
    s1 = BucketBatchSampler(samples, configs, batch_size=4, seed=7)
    s2 = BucketBatchSampler(samples, configs, batch_size=4, seed=7)
    assert s1.batches(0) == s2.batches(0)
    assert s1.batches(0) != s1.batches(1)
    assert s1.batches(0) != BucketBatchSampler(samples, configs, batch_size=4, seed=8).batches(0)
    assert len(s1) == len(s1.batches(0)) == len(s1.batches(5)) == 5 + 3 + 2


def test_every_batch_is_one_bucket_of_one_dataset() -> None:
    samples, configs = make(a={"square": 21, "wide": 13}, b={"square": 10, "wide": 6})
    sampler = BucketBatchSampler(samples, configs, batch_size=3, seed=0)
    for epoch in range(3):
        batches = sampler.batches(epoch)
        assert batches and all(len(b) == 3 for b in batches)
        for batch in batches:
            assert len({samples[i].plan.target_size for i in batch}) == 1
            assert len({samples[i].dataset_id for i in batch}) == 1
        seen = Counter(i for b in batches for i in b)
        assert max(seen.values()) == 1  # no repeats configured: each image at most once


def test_repeats_double_the_count() -> None:
    samples, configs = make(a={"square": 8})
    once = BucketBatchSampler(samples, configs, batch_size=2, seed=0)
    samples2, configs2 = make(a={"square": 8, "repeats": 1})
    twice = BucketBatchSampler(samples2, configs2, batch_size=2, seed=0)
    assert len(twice) == 2 * len(once) == 8
    seen = Counter(i for b in twice.batches(0) for i in b)
    assert set(seen.values()) == {2} and len(seen) == 8


def test_probability_zero_dataset_is_excluded() -> None:
    samples, configs = make(a={"square": 8}, b={"square": 8, "probability": 0.0})
    sampler = BucketBatchSampler(samples, configs, batch_size=2, seed=0)
    used = {samples[i].dataset_id for b in sampler.batches(0) for i in b}
    assert used == {"a"} and len(sampler) == 4


def test_probability_is_the_share_of_batches_per_epoch() -> None:
    samples, configs = make(a={"square": 80, "wide": 80}, b={"square": 80, "wide": 80, "probability": 0.25})
    sampler = BucketBatchSampler(samples, configs, batch_size=4, seed=3)
    assert len(sampler) == 40 + 10
    subsets = []
    for epoch in range(4):
        batches = sampler.batches(epoch)
        assert len(batches) == len(sampler)
        per_dataset = Counter(samples[b[0]].dataset_id for b in batches)
        assert per_dataset == {"a": 40, "b": 10}  # a quarter of b's 40 batches
        used = frozenset(i for b in batches for i in b if samples[i].dataset_id == "b")
        assert len(used) == 40  # still whole batches of distinct images
        subsets.append(used)
        first_half = Counter(samples[b[0]].dataset_id for b in batches[:25])
        assert first_half["b"] >= 1  # b is mixed in, not pushed to the end of the epoch
    assert len(set(subsets)) == 4  # each epoch draws a different subset


def test_small_probability_still_contributes_a_batch() -> None:
    samples, configs = make(a={"square": 8}, b={"square": 8, "probability": 0.1})
    sampler = BucketBatchSampler(samples, configs, batch_size=4, seed=0)
    assert len(sampler) == 3 and Counter(samples[b[0]].dataset_id for b in sampler.batches(0)) == {"a": 2, "b": 1}


@pytest.mark.parametrize(("replicas", "repeats", "probability"), [(1, 0, 1.0), (2, 1, 0.5), (3, 2, 0.3)])
def test_len_matches_every_epoch_and_the_shared_count(replicas: int, repeats: int, probability: float) -> None:
    samples, configs = make(a={"square": 23, "wide": 11, "repeats": repeats, "probability": probability},
                            b={"square": 14})
    sampler = BucketBatchSampler(samples, configs, batch_size=2, seed=5, num_replicas=replicas)
    expected = micro_batches([23, 11], repeats, probability, 2 * replicas) + micro_batches([14], 0, 1.0, 2 * replicas)
    assert len(sampler) == expected
    assert all(len(sampler.batches(epoch)) == expected for epoch in range(5))


def test_micro_batches_arithmetic() -> None:
    assert micro_batches([7, 7], 0, 1.0, 4) == 2  # remainders are dropped per bucket
    assert micro_batches([7, 7], 1, 1.0, 4) == 6
    assert micro_batches([40], 0, 0.25, 4) == 3  # 10 × 0.25 = 2.5 rounds half up
    assert micro_batches([3], 0, 1.0, 4) == micro_batches([8], 0, 0.0, 4) == 0
    assert micro_batches([8], 0, 0.01, 4) == 1


def test_replicas_take_disjoint_slices() -> None:
    samples, configs = make(a={"square": 30, "wide": 14}, b={"square": 17})
    replicas = [BucketBatchSampler(samples, configs, batch_size=2, seed=1, num_replicas=3, rank=r) for r in range(3)]
    per_rank = [r.batches(4) for r in replicas]
    assert len({len(r) for r in replicas}) == 1 and len(per_rank[0]) == len(replicas[0])
    for step in zip(*per_rank, strict=True):
        flat = [i for batch in step for i in batch]
        assert len(flat) == len(set(flat)) == 6
        assert len({samples[i].plan.target_size for i in flat}) == 1  # one shape across the global batch
    everything = [i for rank in per_rank for b in rank for i in b]
    assert len(everything) == len(set(everything))


def test_pad_remainders_keeps_every_sample_in_full_batches() -> None:
    samples, configs = make(a={"square": 5, "wide": 1}, b={"square": 2, "repeats": 1})
    assert micro_batches([5, 1], 0, 1.0, 2, pad_remainders=True) == 3 + 1
    assert micro_batches([2], 1, 1.0, 4, pad_remainders=True) == 1
    for replicas in (1, 2):
        ranks = [BucketBatchSampler(samples, configs, batch_size=2, seed=3, num_replicas=replicas, rank=r,
                                    pad_remainders=True) for r in range(replicas)]
        per_rank = [r.batches(1) for r in ranks]
        assert all(len(r) == len(b) for r, b in zip(ranks, per_rank, strict=True))
        steps = [[i for batch in step for i in batch] for step in zip(*per_rank, strict=True)]
        assert all(len(flat) == 2 * replicas and len({samples[i].plan.target_size for i in flat}) == 1
                   and len({samples[i].dataset_id for i in flat}) == 1 for flat in steps)
        assert {i for flat in steps for i in flat} == set(range(len(samples)))  # nothing left out
        assert per_rank == [r.batches(1) for r in ranks]  # a function of (seed, epoch): resume replays it
    unpadded = BucketBatchSampler(samples, configs, batch_size=2, seed=3)
    assert len(unpadded) == 2 + 2 and all(samples[b[0]].plan.target_size == (64, 64) for b in unpadded.batches(0))
