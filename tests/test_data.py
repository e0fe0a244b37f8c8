"""CIFAR-10 loading (both layouts), the decoded cache and its key, and batches built on the device."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ghost.data import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DataNotFoundError,
    DeviceData,
    cache_key,
    class_balanced_subset,
    data_label,
    describe_cifar10,
    download_cifar10,
    load_cifar10,
)


def write_fake_cifar10(root: Path, per_batch: int = 40, test: int = 50, seed: int = 0) -> Path:
    """A tiny copy in the official ``cifar-10-batches-py`` pickle format, learnable by colour: each class
    has its own mean colour plus noise. Returns ``root``."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 225, size=(10, 3))
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, n in zip(names, [per_batch] * 5 + [test], strict=True):
        labels = rng.integers(0, 10, size=n)
        images = colours[labels][:, :, None, None] + rng.normal(0, 25, size=(n, 3, 32, 32))
        data = np.clip(images, 0, 255).astype(np.uint8).reshape(n, 3072)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist(), "batch_label": name}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES)}, f)
    return root


def _write_folders(root: Path, per_class: int = 2) -> Path:
    for split in ("train", "test"):
        for label, name in enumerate(CIFAR10_CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = np.full((32, 32, 3), 10 * label + i, dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i:04d}.png")
    return root


def test_official_layout_is_read_in_order(tmp_path: Path) -> None:
    root = write_fake_cifar10(tmp_path / "copy")
    images, labels = load_cifar10(root, train=True, cache_dir=tmp_path / "cache")
    assert images.shape == (200, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (200,) and labels.dtype == torch.int64
    with open(root / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        batch = pickle.load(f)
    assert torch.equal(images[40:80], torch.from_numpy(batch["data"]).view(40, 3, 32, 32))
    assert labels[40:80].tolist() == batch["labels"]
    # the batches folder itself is accepted as the root too
    test_images, _ = load_cifar10(root / "cifar-10-batches-py", train=False, cache_dir=tmp_path / "cache")
    assert test_images.shape == (50, 3, 32, 32)


def test_class_folders_are_read_with_official_labels(tmp_path: Path) -> None:
    root = _write_folders(tmp_path / "copy")
    images, labels = load_cifar10(root, train=False, cache_dir=tmp_path / "cache")
    assert labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert images[:, 0, 0, 0].tolist() == [10 * c + i for c in range(10) for i in range(2)]
    assert "class folders" in describe_cifar10(root)["layout"]


def test_root_defaults_to_the_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_fake_cifar10(tmp_path / "copy")
    monkeypatch.setenv("GHOST_CIFAR10", str(root))
    images, _ = load_cifar10(None, train=False, cache_dir=tmp_path / "cache")
    assert len(images) == 50
    monkeypatch.delenv("GHOST_CIFAR10")
    with pytest.raises(DataNotFoundError, match="GHOST_CIFAR10 is not set"):
        load_cifar10(None, train=False, cache_dir=tmp_path / "cache")


def test_missing_and_malformed_data_say_where_and_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as missing:
        load_cifar10(tmp_path / "nowhere", train=True, cache_dir=tmp_path / "cache")
    message = str(missing.value)
    assert str(tmp_path / "nowhere") in message and "GHOST_CIFAR10" in message and "--" not in message  # no CLI flags
    assert "\n" not in message

    bad = _write_folders(tmp_path / "bad", per_class=1)
    (bad / "train" / "cat").rename(bad / "train" / "kitten")
    with pytest.raises(DataNotFoundError, match="malformed.*kitten"):
        load_cifar10(bad, train=True, cache_dir=tmp_path / "cache")

    broken = write_fake_cifar10(tmp_path / "broken")
    (broken / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataNotFoundError, match="test_batch is malformed"):
        load_cifar10(broken, train=False, cache_dir=tmp_path / "cache")


def test_cache_is_keyed_by_copy_and_contents(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = write_fake_cifar10(tmp_path / "first", seed=1)
    second = write_fake_cifar10(tmp_path / "second", seed=2)
    a, _ = load_cifar10(first, train=False, cache_dir=cache)
    b, _ = load_cifar10(second, train=False, cache_dir=cache)
    assert cache_key(first, train=False) != cache_key(second, train=False)
    assert not torch.equal(a, b), "the second copy must not reuse the first copy's cache"
    assert len(list(cache.glob("cifar10-test-*.pt"))) == 2

    again, _ = load_cifar10(first, train=False, cache_dir=cache)  # served from the cache
    assert torch.equal(again, a)

    key = cache_key(first, train=False)
    write_fake_cifar10(tmp_path / "other", seed=3)
    test_batch = first / "cifar-10-batches-py" / "test_batch"
    os.replace(tmp_path / "other" / "cifar-10-batches-py" / "test_batch", test_batch)
    assert cache_key(first, train=False) != key, "a modified copy must get a new key"
    changed, _ = load_cifar10(first, train=False, cache_dir=cache)
    assert not torch.equal(changed, a)


def test_class_balanced_subset_is_fixed_and_balanced() -> None:
    labels = torch.arange(100) % 10
    index = class_balanced_subset(labels, 23)
    assert len(index) == 23 and torch.equal(index, torch.sort(index).values)
    counts = torch.bincount(labels[index], minlength=10)
    assert counts.tolist() == [3, 3, 3] + [2] * 7
    assert torch.equal(index[:3], torch.tensor([0, 1, 2]))  # the first images of each class
    assert len(class_balanced_subset(labels, 1000)) == 100


def test_device_batches_are_augmented_deterministic_and_aligned() -> None:
    n = 64
    labels = torch.arange(n) % 10
    images = (labels * 20 + 10).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous()
    data = DeviceData(images, labels, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert data.steps_per_epoch(16) == 4

    def epoch(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(data.train_batches(16, torch.Generator().manual_seed(seed)))

    first, again, other = epoch(0), epoch(0), epoch(1)
    assert all(
        torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(first, again, strict=True)
    )
    assert any(not torch.equal(y1, y2) for (_, y1), (_, y2) in zip(first, other, strict=True))
    seen = torch.cat([y for _, y in first])
    assert sorted(seen.tolist()) == sorted(labels.tolist()), "one epoch visits every image once"
    padded_somewhere = False
    for x, y in first:
        assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
        values = (x * 255).round()
        assert torch.equal(values.amax(dim=(1, 2, 3)), (y * 20 + 10).float()), "image and label stay aligned"
        padded_somewhere |= bool((values == 0).any())
    assert padded_somewhere, "random crops with padding show zero borders"


def test_eval_batches_are_in_order_and_normalized() -> None:
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(10)
    data = DeviceData(images, labels, CIFAR10_MEAN, CIFAR10_STD)
    batches = list(data.eval_batches(4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x = torch.cat([b for b, _ in batches])
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (images.float() / 255 - mean) / std)


def test_shared_copy_test_split(cifar10_root: Path) -> None:
    images, labels = load_cifar10(cifar10_root, train=False)
    assert images.shape == (10000, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [1000] * 10
    mean = images.float().mean(dim=(0, 2, 3)) / 255
    torch.testing.assert_close(mean, torch.tensor(CIFAR10_MEAN), atol=0.02, rtol=0)
    info = describe_cifar10(cifar10_root)
    if info.get("format") == "jpg":
        assert "LOSSY" in data_label(info)


def test_download_needs_a_folder() -> None:
    with pytest.raises(ValueError, match="downloading CIFAR-10 needs the folder to download it into"):
        download_cifar10(None)
