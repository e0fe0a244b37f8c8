"""experiments.predict and ghost.predict: top-5 classes of image files with a checkpoint saved by the project
(a GhostNet state_dict file: ImageNet names; a finished run folder: its recorded class list), the recipe's
evaluation preprocessing, and one-line refusals (no weights, bad input)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from experiments.predict import main
from ghost.data.imagenet import load_imagenet_samples
from ghost.models import create_model
from ghost.predict import imagenet_categories, load_classifier
from ghost.recipes import recipe_from_dict
from ghost.train import TrainConfig, load_recipe, train

pytestmark = pytest.mark.usefixtures("single_thread")
CLASSES = ("n01", "n02", "n03", "n04", "n05", "n06")  # 6 classes: a top-5 that is not all of them


def sample_images(root: Path, count: int = 2) -> list[str]:
    with open(root / "labels.csv", newline="", encoding="utf-8") as handle:
        return [str(root / row["filename"]) for row in list(csv.DictReader(handle))[:count]]


def printed_top5(out: str, images: list[str]) -> dict[str, list[tuple[float, str]]]:
    """The CLI's output per image: its header line, then 5 lines ``  <probability>  <name>``."""
    lines = out.splitlines()
    assert len(lines) == 6 * len(images), out
    result = {}
    for i, image in enumerate(images):
        block = lines[6 * i : 6 * i + 6]
        assert block[0] == f"{image}:"
        rows = [line.strip().split("  ", 1) for line in block[1:]]
        assert all(line.startswith("  ") for line in block[1:])
        result[image] = [(float(p), name) for p, name in rows]
    return result


def check_probabilities(top: list[tuple[float, str]], names: list[str]) -> None:
    probabilities = [p for p, _ in top]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1 + 1e-4
    assert all(name in names for _, name in top) and len({name for _, name in top}) == 5


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GhostNet 0.5x state_dict saved with torch.save, as the project saves models (model.pt)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "ghostnet_050.pt"
    torch.save(create_model("ghostnet_050").state_dict(), path)
    return path


def test_weights_file_prints_top5_imagenet_classes(weights, imagenet_samples_root, capsys):
    images = sample_images(imagenet_samples_root)
    assert main(["--model", "ghostnet_050", "--weights", str(weights), *images]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    categories = imagenet_categories()
    assert len(categories) == 1000 and categories[0] == "tench"
    for top in printed_top5(captured.out, images).values():
        check_probabilities(top, categories)


def test_preprocessing_is_the_recipes_evaluation_transform(weights, imagenet_samples_root):
    classifier = load_classifier("ghostnet_050", weights)
    assert (classifier.recipe.eval_resize, classifier.recipe.eval_crop) == (256, 224)
    image = sample_images(imagenet_samples_root, 1)[0]
    reference = load_imagenet_samples(imagenet_samples_root, limit=1, size=224).images  # resize 256, crop 224
    torch.testing.assert_close(classifier.preprocess(image), reference, rtol=0, atol=1e-5)
    smoke = load_classifier("ghostnet_050", weights, recipe="imagenet-smoke")  # resize 36, crop 32
    assert smoke.preprocess(image).shape == (1, 3, 32, 32)


def _write_images(folder: Path, count: int, rng: np.random.Generator) -> None:
    for label, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 60, (20, 24, 3), dtype=np.uint8)
            pixels[..., label % 3] += 60 * (1 + label // 3)
            Image.fromarray(pixels).save(folder / name / f"{i}.jpg", quality=90)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of the training engine: GhostNet 0.5x, one epoch at 16x16 on a 6-class ImageFolder."""
    data = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    _write_images(data / "train", 2, rng)
    _write_images(data / "val", 1, rng)
    spec = load_recipe("imagenet-smoke").to_dict()
    spec.update(name="tiny-predict", batch_size=4, train_crop=16, eval_resize=18, eval_crop=16, eval_batch_size=6)
    out = tmp_path_factory.mktemp("runs") / "ghostnet_050"
    train(TrainConfig("ghostnet_050", recipe_from_dict(spec)), out, data_root=data, device="cpu", progress=False)
    return out


def test_run_folder_records_its_classes_and_predict_uses_them(run, imagenet_samples_root, capsys):
    final = json.loads((run / "final.json").read_text())
    assert final["data"]["class_names"] == list(CLASSES)
    images = sample_images(imagenet_samples_root, 1)
    assert main(["--model", "ghostnet_050", "--weights", str(run), *images]) == 0
    top = printed_top5(capsys.readouterr().out, images)[images[0]]
    check_probabilities(top, list(CLASSES))
    assert load_classifier("ghostnet_050", run).preprocess(images[0]).shape == (1, 3, 16, 16)  # the run's recipe


def one_error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and captured.err.count("\n") == 1
    return captured.err.removeprefix("error: ").rstrip("\n")


def test_without_weights_it_refuses(imagenet_samples_root, capsys):
    message = one_error_line(["--model", "ghostnet_100", *sample_images(imagenet_samples_root, 1)], capsys)
    assert message.startswith("no --weights given: an untrained model would print random classes")


def test_bad_input_is_one_line(weights, run, imagenet_samples_root, tmp_path, capsys):
    image = sample_images(imagenet_samples_root, 1)[0]
    missing = str(tmp_path / "missing.jpg")
    message = one_error_line(["--model", "ghostnet_050", "--weights", str(weights), image, missing], capsys)
    assert message == f"image {missing} does not exist; pass image files"  # nothing printed for the first image
    fake = tmp_path / "text.jpg"
    fake.write_text("not an image")
    assert "cannot be read" in one_error_line(["--model", "ghostnet_050", "--weights", str(weights), str(fake)],
                                              capsys)
    assert "do not fit this GhostNet: shape mismatches" in one_error_line(
        ["--model", "ghostnet_100", "--weights", str(weights), image], capsys)
    assert one_error_line(["--model", "ghostnet_100", "--weights", str(run), image], capsys) == (
        f"{run} is a run of ghostnet_050, not ghostnet_100; name the model it trained")


def test_a_run_without_class_names_is_refused(run, tmp_path, imagenet_samples_root, capsys):
    old = tmp_path / "old-run"
    old.mkdir()
    final = json.loads((run / "final.json").read_text())
    del final["data"]["class_names"]
    (old / "final.json").write_text(json.dumps(final))
    (old / "model.pt").write_bytes((run / "model.pt").read_bytes())
    message = one_error_line(["--model", "ghostnet_050", "--weights", str(old),
                              *sample_images(imagenet_samples_root, 1)], capsys)
    assert message.startswith(f"{old} records no class names")
