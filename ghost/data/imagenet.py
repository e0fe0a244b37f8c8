"""A folder of ImageNet sample JPEGs with a ``labels.csv``, as normalised 224x224 tensors.

The folder (e.g. ``shared/data/imagenet-samples``) holds JPEG files and ``labels.csv`` with columns
``filename, class_index, synset, name`` and optionally ``md5`` (checked when present). Images get the
standard ImageNet evaluation preprocessing: resize the shorter side to 256, centre-crop 224, scale to
0..1 and normalise with the ImageNet mean and standard deviation. Nothing is downloaded.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from ghost.data.roots import DataNotFoundError, data_root

__all__ = ["ENV_VAR", "IMAGENET_MEAN", "IMAGENET_STD", "ImageNetSamples", "load_imagenet_samples"]

ENV_VAR = "GHOST_IMAGENET_SAMPLES"
#: Per-channel mean and standard deviation of ImageNet on the 0..1 scale (torchvision's values).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
_REQUIRED_COLUMNS = ("filename", "class_index", "synset", "name")
_HOW_TO_FIX = f"point to (or set {ENV_VAR} to) a folder of ImageNet JPEGs with a labels.csv"


@dataclass(frozen=True)
class ImageNetSamples:
    """Loaded samples: ``images`` float ``[N, 3, size, size]`` (normalised), ``labels`` int64 ``[N]``
    (ImageNet-1k class indices), and per image its ``filenames`` and class ``names``; ``root`` is the
    folder they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    filenames: list[str]
    names: list[str]
    root: Path


def _resolve_root(root: str | Path | None) -> Path:
    path = data_root(root, ENV_VAR, "ImageNet samples folder", _HOW_TO_FIX)
    if not (path / "labels.csv").is_file():
        raise DataNotFoundError(f"no labels.csv in {path}; {_HOW_TO_FIX}")
    return path


def load_imagenet_samples(
    root: str | Path | None = None, *, limit: int | None = None, size: int = 224
) -> ImageNetSamples:
    """Load the images listed in ``root/labels.csv`` (in its order), preprocessed for ImageNet models.

    Args:
        root: the folder; ``None`` reads ``$GHOST_IMAGENET_SAMPLES``.
        limit: load only the first ``limit`` images.
        size: output side (the shorter side is first resized to ``size * 256 / 224``).

    Raises:
        DataNotFoundError: the folder, ``labels.csv`` or a listed file is missing, or a file's md5 does
            not match ``labels.csv``.
        ValueError: ``limit`` or ``size`` is not positive.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images, got {limit}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    path = _resolve_root(root)
    with open(path / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    missing = [c for c in _REQUIRED_COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise DataNotFoundError(
            f"{path / 'labels.csv'} must list images with columns {', '.join(_REQUIRED_COLUMNS)}"
            f"{' (missing: ' + ', '.join(missing) + ')' if missing else ''}; {_HOW_TO_FIX}"
        )
    rows = rows[:limit]
    images = []
    for row in rows:
        file = path / row["filename"]
        if not file.is_file():
            raise DataNotFoundError(f"{file} is listed in labels.csv but missing; {_HOW_TO_FIX}")
        data = file.read_bytes()
        if row.get("md5") and hashlib.md5(data).hexdigest() != row["md5"]:
            raise DataNotFoundError(f"{file} does not match the md5 in labels.csv: the copy is corrupt")
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        image = TF.resize(image, [round(size * 256 / 224)], antialias=True)
        image = TF.center_crop(image, [size, size])
        image = TF.to_dtype(image, torch.float32, scale=True)
        images.append(TF.normalize(image, IMAGENET_MEAN, IMAGENET_STD))
    return ImageNetSamples(
        images=torch.stack(images),
        labels=torch.tensor([int(row["class_index"]) for row in rows], dtype=torch.int64),
        filenames=[row["filename"] for row in rows],
        names=[row["name"] for row in rows],
        root=path,
    )
