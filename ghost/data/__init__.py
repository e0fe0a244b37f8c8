"""Datasets: where a copy is (:func:`data_root`), CIFAR-10 decoding and caching, ImageFolder copies, and the two
batch sources (:mod:`ghost.data.sources`)."""

from ghost.data.batches import VALIDATION_FRACTION, DeviceData, class_balanced_subset, validation_split
from ghost.data.cifar10 import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    cache_key,
    data_fingerprint,
    data_label,
    describe_cifar10,
    download_cifar10,
    load_cifar10,
    resolve_root,
)
from ghost.data.roots import DataNotFoundError, data_root

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "VALIDATION_FRACTION",
    "DataNotFoundError",
    "DeviceData",
    "cache_key",
    "class_balanced_subset",
    "data_fingerprint",
    "data_label",
    "data_root",
    "describe_cifar10",
    "download_cifar10",
    "load_cifar10",
    "resolve_root",
    "validation_split",
]
