"""Batches as index tensors: one gather per batch from a whole-split tensor, no collation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler, SequentialSampler


class IndexBatchSampler(Sampler[torch.Tensor]):
    """Yields whole batches of indices, reshuffled per epoch from `seed + epoch` (resumable).

    Under DDP (`num_replicas` > 1) every rank draws the same order and keeps every
    `num_replicas`-th sample from `rank` on, as torch's DistributedSampler does. Training pads
    the order by wrapping around (`pad=True`), so all ranks take the same number of steps;
    evaluation does not, so each sample is counted exactly once.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        device: torch.device | str = "cpu",
        num_replicas: int = 1,
        rank: int = 0,
        pad: bool = False,
    ) -> None:
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.device = torch.device(device)
        self.num_replicas, self.rank, self.pad = num_replicas, rank, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard_size(self) -> int:
        if self.num_replicas == 1:
            return self.size
        if self.pad:
            return -(-self.size // self.num_replicas)
        return len(range(self.rank, self.size, self.num_replicas))

    def __iter__(self) -> Iterator[torch.Tensor]:
        # A generator, so the order is drawn at the first batch, not when iter() is called:
        # on resume Lightning calls iter() before set_epoch(), and the resumed epoch must still
        # get its own order.
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        if self.num_replicas > 1:
            if self.pad:
                total = self._shard_size() * self.num_replicas
                order = order.repeat(-(-total // self.size))[:total]
            order = order[self.rank :: self.num_replicas]
        # One host-to-device copy per epoch; each batch's indices are then a view on the device.
        yield from order.to(self.device).split(self.batch_size)

    def __len__(self) -> int:
        return -(-self._shard_size() // self.batch_size)


class InOrderBatchSampler(IndexBatchSampler, SequentialSampler):
    """IndexBatchSampler's batches, in order, for Lightning's `overfit_batches`
    (debug=overfit): Lightning keeps a loader's sampler then only if it is a
    SequentialSampler, and puts one of single indices in place of any other, which these
    loaders (whole batches, no collation) cannot take. Only the type is SequentialSampler's."""

    def __init__(self, size: int, batch_size: int, shuffle: bool = False, **kwargs: Any) -> None:
        IndexBatchSampler.__init__(self, size, batch_size, shuffle=False, **kwargs)


class TensorBatches(Dataset):
    """A dataset indexed by a tensor of indices, returning a whole (images, labels) batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __getitem__(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __len__(self) -> int:
        return len(self.labels)
