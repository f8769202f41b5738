"""Length-bucketed batches: every feature once per epoch, similar lengths together, a new order
each epoch, the same global batches on any number of ranks."""

import numpy as np
import pytest

import samplers


def epochs(sampler, n):
    out = []
    for _ in range(n):
        out.append(list(iter(sampler)))
    return out


@pytest.mark.parametrize("n", [1000, 1003])
def test_each_feature_once_per_epoch_and_batches_are_tight(n):
    lengths = np.random.default_rng(0).integers(20, 384, n)
    sampler = samplers.LengthBucketBatchSampler(lengths, 16, shuffle=True, seed=1)
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
    one = list(iter(samplers.LengthBucketBatchSampler(lengths, 8, seed=3)))
    two = samplers.LengthBucketBatchSampler(lengths, 4, seed=3, replicas=2)
    two_batches = list(iter(two))
    assert len(two_batches) == len(two) and len(two_batches) % 2 == 0
    merged = [sorted(two_batches[i] + two_batches[i + 1]) for i in range(0, len(two_batches), 2)]
    # A last global batch smaller than the number of ranks is dropped on 2 ranks (here 1 feature).
    assert merged == [sorted(b) for b in one if len(b) >= 2]


def test_evaluation_order_sorted_by_length():
    lengths = np.array([5, 3, 9, 1])
    assert list(iter(samplers.LengthBucketBatchSampler(lengths, 2, shuffle=False))) == [
        [3, 1],
        [0, 2],
    ]


@pytest.mark.parametrize(
    "n_questions, replicas, batch_size", [(50, 1, 4), (50, 2, 4), (7, 4, 3), (3, 8, 2), (1, 2, 5)]
)
def test_validation_batches_keep_each_question_on_one_rank(n_questions, replicas, batch_size):
    rng = np.random.default_rng(n_questions)
    example_index = np.repeat(np.arange(n_questions), rng.integers(1, 4, n_questions))
    lengths = rng.integers(20, 384, len(example_index))
    sampler = samplers.QuestionShardedBatchSampler(lengths, example_index, batch_size, replicas)
    batches = list(iter(sampler))
    assert len(batches) == len(sampler) and len(batches) % replicas == 0
    seen = []
    for rank in range(replicas):
        mine = batches[rank::replicas]  # as Determined's DistributedBatchSampler deals them
        assert all(0 < len(b) <= batch_size for b in mine)
        got = np.unique(np.concatenate(mine))
        owned = sampler.owned(rank)
        assert set(owned) <= set(got) and set(got) - set(owned) <= {
            int(owned[-1]) if len(owned) else 0
        }
        assert all(example_index[f] % replicas == rank for f in owned)
        seen.extend(owned.tolist())
        lengths_in_order = [lengths[f] for b in mine for f in b if f in set(owned)]
        assert lengths_in_order == sorted(lengths_in_order)
    assert sorted(seen) == list(range(len(example_index)))
