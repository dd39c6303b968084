"""Data: the datamodule machinery, the datasets, their files and their diagnostics."""

from cnnlab.data.datamodule import ImageDataModule
from cnnlab.data.datasets import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule
from cnnlab.data.sampling import IndexBatchSampler

__all__ = [
    "CIFAR10DataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "IndexBatchSampler",
    "MNISTDataModule",
]
