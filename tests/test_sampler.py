"""Length-bucketed batches: every feature once per epoch, similar lengths together, a new order
each epoch, the same global batches on any number of ranks."""
import numpy as np
import pytest

import data


def epochs(sampler, n):
    out = []
    for _ in range(n):
        out.append(list(iter(sampler)))
    return out


@pytest.mark.parametrize("n", [1000, 1003])
def test_each_feature_once_per_epoch_and_batches_are_tight(n):
    lengths = np.random.default_rng(0).integers(20, 384, n)
    sampler = data.LengthBucketBatchSampler(lengths, 16, shuffle=True, seed=1)
    first, second = epochs(sampler, 2)
    assert len(first) == len(sampler)
    assert sorted(i for b in first for i in b) == list(range(n))
    assert first != second  # reshuffled every epoch
    padded = sum(16 * max(lengths[b]) for b in first)
    assert lengths.sum() / padded > 0.9
    unbucketed = [list(range(i, min(i + 16, n))) for i in range(0, n, 16)]
    assert lengths.sum() / sum(16 * max(lengths[b]) for b in unbucketed) < 0.7


@pytest.mark.parametrize("n", [1000, 1006, 1001])
def test_same_global_batches_on_one_and_two_ranks(n):
    lengths = np.random.default_rng(0).integers(20, 384, n)
    one = list(iter(data.LengthBucketBatchSampler(lengths, 8, seed=3)))
    two = data.LengthBucketBatchSampler(lengths, 4, seed=3, replicas=2)
    two_batches = list(iter(two))
    assert len(two_batches) == len(two) and len(two_batches) % 2 == 0
    merged = [sorted(two_batches[i] + two_batches[i + 1]) for i in range(0, len(two_batches), 2)]
    # A last global batch smaller than the number of ranks is dropped on 2 ranks (here 1 feature).
    assert merged == [sorted(b) for b in one if len(b) >= 2]


def test_evaluation_order_sorted_by_length():
    lengths = np.array([5, 3, 9, 1])
    assert list(iter(data.LengthBucketBatchSampler(lengths, 2, shuffle=False))) == [[3, 1], [0, 2]]
