"""Both notebooks run top to bottom (nbclient, the venv's kernel), so they never rot.

The notebooks are kept in git executed (a reader sees their figures without running them); these tests also
execute them in memory, on small data, and never write them back.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def client(name: str) -> NotebookClient:
    """A client that executes ``notebooks/<name>.ipynb`` in memory, from the notebooks folder, in a kernel that
    imports the installed package (no path set up for it) and inherits this process's environment."""
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for cell in notebook.cells:  # start from a clean copy: the stored outputs are a reader's, not this run's
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )


def execute(name: str) -> nbformat.NotebookNode:
    """Execute ``notebooks/<name>.ipynb``; a failing cell fails the test with its error."""
    runner = client(name)
    try:
        runner.execute()
    except CellExecutionError as error:
        pytest.fail(f"{name}.ipynb failed: {error.ename}: {error.evalue}", pytrace=False)
    return runner.nb


def outputs(notebook: nbformat.NotebookNode) -> tuple[str, int]:
    """All text the notebook printed or displayed, and how many images it drew."""
    text, images = [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text.append(output.get("text", ""))
            data = output.get("data", {})
            text.append(data.get("text/plain", ""))
            images += "image/png" in data
    return "\n".join(text), images


@pytest.mark.parametrize(("name", "figures"), [("feature_redundancy", 6), ("results", 6)])
def test_notebook_is_stored_executed_with_its_figures(name, figures):
    """A reader sees the figures without running anything: every code cell ran, in order, without an error."""
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert not any(out.output_type == "error" for cell in code for out in cell.outputs)
    assert outputs(notebook)[1] >= figures


@pytest.mark.parametrize("name", ["feature_redundancy", "results"])
def test_notebook_imports_the_installed_package(name):
    code = [cell.source for cell in nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells
            if cell.cell_type == "code"]
    assert not any("sys.path" in source for source in code)


@pytest.mark.parametrize(
    ("name", "variable", "make", "line"),
    [
        ("feature_redundancy", "GHOST_CIFAR10", False, "DataNotFoundError: GHOST_CIFAR10={folder} is not a folder: "
                                                       "set it to a CIFAR-10 copy before starting Jupyter"),
        ("results", "GHOST_RESULTS_DIR", False, "DataNotFoundError: {folder} is not a folder: set GHOST_RESULTS_DIR"),
        ("results", "GHOST_RESULTS_DIR", True, "DataNotFoundError: {folder}/complexity.csv is missing: write it with "
                                               "python -m experiments.complexity"),
    ],
    ids=["feature_redundancy-no-cifar10", "results-no-folder", "results-no-table"],
)
def test_notebook_without_its_data_stops_with_one_line(name, variable, make, line, tmp_path, monkeypatch):
    """A missing data folder (checked by the first code cell) or table is shown as one line, without the stack,
    and nothing after the failing cell runs."""
    folder = tmp_path / "data"
    if make:
        folder.mkdir()
    monkeypatch.setenv(variable, str(folder))
    runner = client(name)
    with pytest.raises(CellExecutionError) as error:
        runner.execute()
    code = [cell for cell in runner.nb.cells if cell.cell_type == "code"]
    failed = [i for i, cell in enumerate(code) if any(out.output_type == "error" for out in cell.outputs)]
    assert failed == [2 if make else 0]  # the first cell, or the first that reads a table
    (failure,) = [out for out in code[failed[0]].outputs if out.output_type == "error"]
    (shown,) = failure.traceback  # one line, no stack
    assert shown.startswith(line.format(folder=folder))
    assert shown in str(error.value) and error.value.ename == "DataNotFoundError"
    assert all(cell.execution_count is None and not cell.outputs for cell in code[failed[0] + 1 :])


def test_feature_redundancy_notebook(cifar10_root, imagenet_samples_root, monkeypatch):
    monkeypatch.setenv("GHOST_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("GHOST_CIFAR10", str(cifar10_root))
    monkeypatch.setenv("GHOST_IMAGENET_SAMPLES", str(imagenet_samples_root))
    monkeypatch.delenv("GHOST_RESNET50_WEIGHTS", raising=False)
    monkeypatch.delenv("GHOST_RUNS_DIR", raising=False)
    text, images = outputs(execute("feature_redundancy"))
    weights = [line for line in text.splitlines() if line.startswith(("VGG-16:", "Ghost-VGG-16:"))]
    assert len(weights) == 2 and all(("untrained" in w) != ("trained:" in w) for w in weights)
    if any("untrained" in line for line in weights):  # a clean clone has no runs: the fallback says so
        assert "UNTRAINED" in text and "learned redundancy needs" in text
    assert "ResNet-50: untrained" in text and "beside it: untrained" in text
    assert "MSE / variance" in text and "held out" in text
    # Figure-1 grids of VGG-16 and of ResNet-50 twice (given weights, random), layer curves, MSE vs d, intrinsic
    # vs ghost maps
    assert images == 6


def test_results_notebook(monkeypatch):
    """Runs on the repository's results/: a table the notebook needs that is missing fails this test."""
    monkeypatch.delenv("GHOST_RESULTS_DIR", raising=False)
    text, images = outputs(execute("results"))
    assert "results from" in text
    results = NOTEBOOKS.parent / "results"
    imagenette = [name for name in ("imagenette_resnet50.csv", "imagenette_small_nets.csv")
                  if (results / name).is_file()]
    # d sweep, s sweep, compression, learning curves, redundancy curves, MSE vs d, and each Imagenette table the
    # campaign has written
    assert images == 6 + len(imagenette)
    assert text.count("not trained yet: python -m experiments.campaign imagenette") == 2 - len(imagenette)
