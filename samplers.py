"""The batch samplers: which features go in which batch, on which rank.

    LengthBucketBatchSampler     training (and predict.py): batches of similar length, the same
                                 global batches on 1 or N ranks, reproducible across resumes
    QuestionShardedBatchSampler  validation: every feature of a question on one rank, so each rank
                                 post-processes its own questions

Both deal per-rank batches out as Determined's DataLoader shards them (batch b to rank b % N).
"""

import math

import numpy as np
import torch


class LengthBucketBatchSampler(torch.utils.data.Sampler):
    """Batches of features of similar length, so padding to each batch's longest feature wastes
    little. Each epoch: a seeded random permutation, cut into pools of `pool_batches` global
    batches, each pool sorted by length and cut into global batches, the global batch order
    shuffled, and each global batch dealt out as `replicas` consecutive per-rank batches (the way
    Determined's loader shards batches). So the global batches are the same on 1 or N ranks, every
    rank builds the same sequence, and a resumed run (which replays the sampler and skips what it
    trained) sees the same batches. Without `shuffle` (evaluation): all features sorted by length,
    in per-rank batches."""

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        replicas: int = 1,
        pool_batches: int = 64,
    ):
        self.lengths, self.batch_size, self.shuffle, self.seed = (
            np.asarray(lengths),
            batch_size,
            shuffle,
            seed,
        )
        self.replicas, self.global_size = replicas, batch_size * replicas
        self.pool = pool_batches * self.global_size
        self.epoch = 0

    def __len__(self) -> int:
        n, g = len(self.lengths), self.global_size
        if not self.shuffle:
            return math.ceil(n / self.batch_size)
        return (n // g + (n % g >= self.replicas)) * self.replicas

    def __iter__(self):
        n, bs, g = len(self.lengths), self.batch_size, self.global_size
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            yield from (order[i : i + bs].tolist() for i in range(0, n, bs))
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(n)
        for lo in range(0, n, self.pool):
            pool = order[lo : lo + self.pool]
            order[lo : lo + self.pool] = pool[np.argsort(self.lengths[pool], kind="stable")]
        for b in rng.permutation(math.ceil(n / g)):
            batch = order[b * g : (b + 1) * g]
            # Exactly `replicas` parts per global batch keeps every rank on its share; a last
            # global batch smaller than the number of ranks (at most replicas - 1 features) is dropped.
            if len(batch) >= self.replicas:
                yield from (part.tolist() for part in np.array_split(batch, self.replicas))


class QuestionShardedBatchSampler(torch.utils.data.Sampler):
    """Validation batches that keep all features of a question on one rank, so each rank can
    post-process its own questions: question q belongs to rank q % replicas; each rank's features,
    sorted by length, are cut into the same number of batches (at most `batch_size` each) and
    interleaved the way Determined's loader deals batches out (rank r gets batches r, r + replicas,
    ...). A rank with fewer features than batches fills the gap with a repeat of one of its own
    (or, owning none, of feature 0); `owned` tells the reducer which features to keep."""

    def __init__(
        self, lengths: np.ndarray, example_index: np.ndarray, batch_size: int, replicas: int = 1
    ):
        self.replicas = replicas
        example_index = np.asarray(example_index)
        self.per_rank = [np.flatnonzero(example_index % replicas == r) for r in range(replicas)]
        lengths = np.asarray(lengths)
        self.per_rank = [f[np.argsort(lengths[f], kind="stable")] for f in self.per_rank]
        self.batches = max(1, max(math.ceil(len(f) / batch_size) for f in self.per_rank))

    def owned(self, rank: int) -> np.ndarray:
        """The features whose questions rank `rank` post-processes, sorted."""
        return np.sort(self.per_rank[rank])

    def __len__(self) -> int:
        return self.batches * self.replicas

    def __iter__(self):
        chunks = []
        for features in self.per_rank:
            parts = np.array_split(features, self.batches)
            fill = features[-1:] if len(features) else np.zeros(1, dtype=np.int64)
            chunks.append([p if len(p) else fill for p in parts])
        for b in range(self.batches):
            for rank in range(self.replicas):
                yield chunks[rank][b].tolist()
