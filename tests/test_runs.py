"""The run layer (ghost.runs): model specs, the identity and folder of a run as the live campaigns know them,
every committed record read and written back byte for byte, the one weights loader, and the import rule."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from ghost.complexity import count_params
from ghost.models import create_model
from ghost.recipes import load_recipe, recipe_from_dict
from ghost.runs import (
    FINAL,
    MODEL,
    ModelSpec,
    RunRecord,
    RunSpec,
    find_runs,
    load_trained,
    run_dir,
    run_identity,
    runs_frame,
)
from ghost.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
RECORDS = sorted(REPO.glob("results/runs/**/final.json"))


# ---------------------------------------------------------------- model specs


@pytest.mark.parametrize(
    ("label", "name", "ratio", "dw_size"),
    [("vgg16_cifar", "vgg16_cifar", None, None), ("ghost_vgg16_cifar", "ghost_vgg16_cifar", 2, 3),
     ("ghost_vgg16_cifar-s4-d5", "ghost_vgg16_cifar", 4, 5), ("ghost_resnet50-s2-d1", "ghost_resnet50", 2, 1)],
)
def test_a_model_label_parses_and_labels_back(label, name, ratio, dw_size):
    spec = ModelSpec.parse(label)
    assert (spec.name, spec.ratio, spec.dw_size) == (name, ratio, dw_size)
    assert ModelSpec.parse(spec.label) == spec
    assert spec.label == (name if ratio is None else f"{name}-s{ratio}-d{dw_size}")


def test_bad_model_specs_say_what_to_fix():
    with pytest.raises(ValueError, match="apply only to Ghost models"):
        ModelSpec("vgg16_cifar", ratio=2)
    with pytest.raises(ValueError, match="names a Ghost model's s and d; drop it or use 'ghost_vgg16_cifar-s2-d3'"):
        ModelSpec.parse("vgg16_cifar-s2-d3")
    with pytest.raises(ValueError, match="unknown"):
        ModelSpec("no_such_model")
    assert ModelSpec.named("vgg16_cifar", 4, 5) == ModelSpec("vgg16_cifar")  # a plain model ignores s and d


def test_a_spec_builds_its_model():
    model = ModelSpec.parse("ghost_resnet56_cifar-s3-d1").build(num_classes=7)
    expected = create_model("ghost_resnet56_cifar", num_classes=7, ratio=3, dw_size=1)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in expected.state_dict().items()}
    assert count_params(model) != count_params(ModelSpec("ghost_resnet56_cifar").build(7))


# ---------------------------------------------------------------- identity and folder: what the campaigns know


def _spec_of(identity: dict) -> RunSpec:
    return RunSpec(identity["model"], recipe_from_dict(identity["recipe_spec"]), identity["seed"], identity["ratio"],
                   identity["dw_size"], identity.get("validation", False))


@pytest.mark.parametrize("record", RECORDS, ids=lambda path: str(path.parent.relative_to(REPO / "results/runs")))
def test_the_identity_and_folder_of_every_committed_run_are_unchanged(record):
    """The live campaigns resume and find runs by ``run_identity`` and ``run_dir``: for each committed record,
    the RunSpec of its configuration gives exactly its stored identity and its folder."""
    final = json.loads(record.read_text(encoding="utf-8"))
    stored = final["identity"]
    spec = _spec_of(stored)
    assert run_identity(spec, stored["data"], stored["micro_batch"]) == stored
    assert json.dumps(run_identity(spec, stored["data"], stored["micro_batch"])) == json.dumps(stored)
    assert run_dir(spec, REPO / "results/runs") == record.parent


def test_identity_of_validation_ghost_and_plain_runs():
    recipe = load_recipe("quick")
    ghost = TrainConfig("ghost_vgg16_cifar", recipe, seed=1, validation=True)
    assert TrainConfig is RunSpec and (ghost.ratio, ghost.dw_size) == (2, 3)
    identity = run_identity(ghost, "abc", 64)
    assert list(identity) == ["model", "ratio", "dw_size", "seed", "recipe", "recipe_spec", "validation", "data",
                              "micro_batch"]
    assert identity["validation"] is True and identity["recipe_spec"] == json.loads(json.dumps(recipe.to_dict()))
    assert run_dir(ghost, "runs") == Path("runs/quick/ghost_vgg16_cifar-s2-d3/seed1-val")
    plain = RunSpec("resnet56_cifar", recipe)
    assert "validation" not in run_identity(plain, "abc", 64) and plain.ratio is None
    assert run_dir(plain, "runs") == Path("runs/quick/resnet56_cifar/seed0")
    assert run_dir(RunSpec("ghost_resnet50", load_recipe("imagenette-64px"), 2, 4, 1), "r") == Path(
        "r/imagenette-64px/ghost_resnet50-s4-d1/seed2")


# ---------------------------------------------------------------- records


def test_there_are_committed_records():
    assert len(RECORDS) >= 19


@pytest.mark.parametrize("record", RECORDS, ids=lambda path: str(path.parent.relative_to(REPO / "results/runs")))
def test_every_committed_record_reads_and_writes_back_byte_for_byte(record):
    run = RunRecord.read(record.parent)
    assert run.to_json() == record.read_text(encoding="utf-8")
    expected = "imagenette2-224" if run.dataset == "imagenet" else "cifar10-jpeg"  # older records: data.root only
    assert run.data_name == expected and run.model.label == record.parents[1].name
    assert run.recipe.name == run.config["recipe"] and run.num_classes == 10


def test_a_current_record_round_trips_with_its_newer_keys():
    final = json.loads(RECORDS[0].read_text(encoding="utf-8"))
    current = {"test_acc": 80.0, "test_acc_running_bn": 79.5, **{k: v for k, v in final.items() if k != "test_acc"}}
    current["config"] = {**final["config"], "validation": True, "dataset": "imagenet", "num_classes": 3}
    current["data"] = {"name": "imagenette2", "layout": "imagefolder", "classes": 3, "class_names": ["a", "b", "c"],
                       "label": "imagenette2 (...)", "fingerprint": "f"}
    record = RunRecord.from_dict(current)
    assert record.to_dict() == current and list(record.to_dict()) == list(current)
    assert record.to_json() == json.dumps(current, indent=2) + "\n"
    assert (record.data_name, record.class_names, record.validation, record.num_classes, str(record.dataset)) == (
        "imagenette2", ["a", "b", "c"], True, 3, "imagenet")


def test_a_record_with_unknown_or_missing_keys_is_refused():
    with pytest.raises(ValueError, match="is not a run record .*unknown keys surprise"):
        RunRecord.from_dict({"test_acc": 1.0, "scale": "smoke", "config": {"model": "vgg16_cifar"}, "surprise": 1})
    with pytest.raises(ValueError, match="missing scale"):
        RunRecord.from_dict({"test_acc": 1.0, "config": {"model": "vgg16_cifar"}})


def test_runs_frame_reads_the_committed_records():
    runs = find_runs(REPO / "results/runs")
    frame = runs_frame(runs)
    assert len(frame) == len(RECORDS) and set(frame["data_name"]) <= {"cifar10-jpeg", "imagenette2-224"}
    assert set(frame.loc[frame["dataset"] == "cifar10", "data_name"]) == {"cifar10-jpeg"}
    budget = frame[frame["recipe"] == "budget"]
    assert budget["shared_identity"].nunique() == 1 and not budget["validation"].any()
    assert frame.loc[frame["validation"], "recipe"].str.startswith("imagenette-").all()  # the recipe search


# ---------------------------------------------------------------- the one loader


def _finished_run(tmp_path: Path, model: str = "resnet56_cifar") -> tuple[Path, torch.nn.Module]:
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(3)
    net = ModelSpec.parse(model).build(10)
    torch.save(net.state_dict(), run / MODEL)
    record = RunRecord(42.0, "smoke", {"model": ModelSpec.parse(model).name, "ratio": None, "dw_size": None})
    (run / FINAL).write_text(record.to_json(), encoding="utf-8")
    return run, net


def test_load_trained_reads_a_run_folder_and_a_weights_file(tmp_path):
    run, net = _finished_run(tmp_path)
    trained = load_trained(run)
    assert trained.record.test_acc == 42.0 and not trained.model.training and trained.source == run
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in trained.model.state_dict().items())
    file = load_trained(run / MODEL, "resnet56_cifar", num_classes=10)
    assert file.record is None and torch.equal(file.model.fc.weight, net.fc.weight)


def test_load_trained_says_what_is_wrong(tmp_path):
    run, _ = _finished_run(tmp_path)
    with pytest.raises(ValueError, match="is a run of resnet56_cifar, not vgg16_cifar; name the model it trained"):
        load_trained(run, "vgg16_cifar")
    with pytest.raises(ValueError, match="not a finished run folder; name the model its weights belong to"):
        load_trained(run / MODEL)
    with pytest.raises(ValueError, match="is not a state_dict of vgg16_cifar: the weights .* do not fit"):
        load_trained(run / MODEL, "vgg16_cifar")
    (run / MODEL).write_bytes(b"junk")
    with pytest.raises(ValueError, match="model.pt is corrupt or does not fit resnet56_cifar"):
        load_trained(run)


# ---------------------------------------------------------------- the import rule

ALIASES = {"ghost.models.weights": {"ghost.runs.weights"}}
"""Documented names kept where they were: the alias module and the one module it re-exports."""


def _imports(path: Path) -> set[str]:
    """The ``ghost``/``experiments`` modules ``path`` imports (absolute names)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name.split(".")[0] in ("ghost", "experiments")}


def _module(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


MODULES = {_module(path): _imports(path) for folder in ("ghost", "experiments", "tests")
           for path in sorted((REPO / folder).rglob("*.py"))} | {"hubconf": _imports(REPO / "hubconf.py")}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _offending(module: str, allowed: tuple[str, ...]) -> list[str]:
    return sorted(name for name in MODULES[module] - ALIASES.get(module, set())
                  if not any(_within(name, package) for package in allowed))


def test_runs_imports_only_models_recipes_and_io():
    allowed = ("ghost.runs", "ghost.models", "ghost.layers", "ghost.recipes", "ghost.io")
    for module in [m for m in MODULES if _within(m, "ghost.runs")]:
        assert _offending(module, allowed) == [], module


def test_models_predict_and_redundancy_import_nothing_from_train():
    for module in [m for m in MODULES if any(_within(m, p) for p in ("ghost.models", "ghost.predict",
                                                                     "ghost.redundancy"))]:
        assert not [name for name in MODULES[module] if _within(name, "ghost.train")], module
    for module in ("ghost.predict", "ghost.redundancy.sources", "ghost.train.engine"):
        assert any(_within(name, "ghost.runs") for name in MODULES[module]), module


def test_only_experiments_reach_into_train_past_its_entry_points():
    """Outside ``experiments/`` (and ``ghost.train`` itself), ``ghost.train`` is imported as the package only;
    the tests of its internals are listed."""
    internals = {"tests.test_train", "tests.test_train_imagenet", "tests.test_transfer", "tests.test_redundancy"}
    for module, names in MODULES.items():
        if _within(module, "experiments") or _within(module, "ghost.train") or module in internals:
            continue
        deep = [name for name in names if name.startswith("ghost.train.") and name.removeprefix("ghost.train.")
                not in _public_train_names()]
        assert deep == [], module


def _public_train_names() -> set[str]:
    import ghost.train

    return set(ghost.train.__all__)


def test_the_record_file_is_named_in_one_module():
    spelled = [module for folder in ("ghost", "experiments") for path in sorted((REPO / folder).rglob("*.py"))
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.Constant) and node.value == "final.json" and (module := _module(path))]
    assert spelled == ["ghost.runs.record"]


def test_checkpoints_are_read_by_one_module():
    """``torch.load`` of weights happens in the loader (and in the run folder's resume from its checkpoint); the
    only other reader is CIFAR-10's decoded cache."""
    readers = sorted(_module(path) for folder in ("ghost", "experiments") for path in (REPO / folder).rglob("*.py")
                     if "torch.load(" in path.read_text(encoding="utf-8"))
    assert readers == ["ghost.data.cifar10", "ghost.runs.folder", "ghost.runs.weights"]
