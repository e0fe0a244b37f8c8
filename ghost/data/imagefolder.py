"""ImageNet-format data: an ImageFolder-style copy (``train/<class>/*``, ``val/<class>/*``), checked up front.

The folders are scanned with torchvision's ``find_classes``/``make_dataset``; every image's header is read
once (Pillow identifies the format without decoding the pixels) so that a file that is not an image fails
before training starts, not in a DataLoader worker hours later. Images are decoded with
``torchvision.io.decode_image`` and transformed with torchvision's v2 transforms on uint8 tensors
(normalisation happens on the training device, see :mod:`ghost.data.sources`).

Augmentation is deterministic per sample: the dataset is indexed by ``(index, seed)`` and draws the random
crop and flip of that image from ``seed``, so the data of an epoch does not depend on the number of
DataLoader workers or processes (see :class:`ghost.data.sources.MicroBatchSampler`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.datasets.folder import find_classes, make_dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from ghost.data.roots import DataNotFoundError, data_root

__all__ = [
    "ENV_VAR", "ImageFolderData", "SeededImageDataset", "check_readable", "eval_transform", "scan_image_folder",
    "train_transform",
]

ENV_VAR = "GHOST_IMAGENET"
SPLITS = ("train", "val")
#: What ``torchvision.io.decode_image`` decodes (other formats Pillow knows would fail mid-training).
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
_HOW_TO_FIX = f"pass the folder that holds 'train/<class>/' and 'val/<class>/' image folders (or set {ENV_VAR})"


@dataclass(frozen=True)
class ImageFolderData:
    """A scanned copy: ``classes`` (sorted folder names), and per split the image paths and their labels."""

    root: Path
    classes: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]

    def fingerprint(self) -> str:
        """Identity of the contents, independent of where the copy lives: class names, file names, sizes."""
        digest = hashlib.sha256("|".join(self.classes).encode())
        for split in SPLITS:
            for path, label in getattr(self, split):
                digest.update(f"|{Path(path).relative_to(self.root)}:{label}:{os.path.getsize(path)}".encode())
        return digest.hexdigest()[:20]

    def describe(self) -> dict[str, object]:
        """What a result records about the copy (JSON-ready): its folder name (never the machine's absolute
        path), layout, classes and image counts; the fingerprint goes beside it."""
        return {
            "name": self.root.name,
            "layout": "imagefolder",
            "classes": len(self.classes),
            "class_names": list(self.classes),
            "train_images": len(self.train),
            "val_images": len(self.val),
        }


def _resolve_root(root: str | Path | None) -> Path:
    path = data_root(root, ENV_VAR, "ImageNet-format folder", _HOW_TO_FIX).resolve()
    if not path.is_dir():
        raise DataNotFoundError(f"{path} is not a folder; {_HOW_TO_FIX}")
    return path


def _scan_split(root: Path, split: str) -> tuple[list[str], list[tuple[str, int]]]:
    folder = root / split
    if not folder.is_dir():
        raise DataNotFoundError(f"{root} is not ImageFolder-shaped: it has no '{split}/' folder; {_HOW_TO_FIX}")
    try:
        classes, class_to_idx = find_classes(str(folder))
        samples = make_dataset(str(folder), class_to_idx, extensions=EXTENSIONS)
    except FileNotFoundError as error:  # no class folder, or a class folder without images
        raise DataNotFoundError(f"{folder} is not ImageFolder-shaped ({error}); {_HOW_TO_FIX}") from error
    return classes, samples


def check_readable(samples: list[tuple[str, int]]) -> None:
    """Raise ``DataNotFoundError`` for the first of ``samples`` whose header Pillow cannot read."""
    for path, _ in samples:
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018 - reading the header is the check
        except (UnidentifiedImageError, OSError) as error:
            raise DataNotFoundError(
                f"image {path} cannot be read ({type(error).__name__}); delete or replace it"
            ) from error


def scan_image_folder(root: str | Path | None) -> ImageFolderData:
    """Scan and check an ImageFolder-style copy (``None``: ``$GHOST_IMAGENET``).

    Raises:
        DataNotFoundError: no such folder, a missing ``train/`` or ``val/``, a split without class folders
            or images, train and val class lists that differ, or a file that is not a readable image.
    """
    path = _resolve_root(root)
    (train_classes, train), (val_classes, val) = (_scan_split(path, split) for split in SPLITS)
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        raise DataNotFoundError(
            f"the class folders of {path / 'train'} and {path / 'val'} differ (only in train: "
            f"{', '.join(only_train) or 'none'}; only in val: {', '.join(only_val) or 'none'}); "
            "both splits need the same classes"
        )
    check_readable(train)
    check_readable(val)
    return ImageFolderData(root=path, classes=train_classes, train=train, val=val)


def train_transform(crop: int) -> v2.Transform:
    """Random-resized crop to ``crop`` (scale 0.08-1, torchvision's defaults) and a horizontal flip."""
    return v2.Compose([v2.RandomResizedCrop(crop, antialias=True), v2.RandomHorizontalFlip()])


def eval_transform(resize: int, crop: int) -> v2.Transform:
    """Resize the shorter side to ``resize``, then center-crop ``crop``."""
    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(crop)])


class SeededImageDataset(Dataset):
    """uint8 ``[3, H, W]`` images and labels of ``samples``, indexed by ``(index, seed)``: the transform's
    randomness is drawn from ``seed`` (the global RNG of the caller is left untouched)."""

    def __init__(self, samples: list[tuple[str, int]], transform: v2.Transform) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = item
        path, label = self.samples[index]
        image = decode_image(path, mode=ImageReadMode.RGB)
        if image.dtype != torch.uint8:  # e.g. a 16-bit PNG
            image = v2.functional.to_dtype(image, torch.uint8, scale=True)
        with torch.random.fork_rng(devices=[]):  # the transforms draw from the CPU generator only
            torch.default_generator.manual_seed(seed)
            return self.transform(image), label
