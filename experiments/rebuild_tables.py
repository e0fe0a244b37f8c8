"""Rebuild the campaign tables and their figures from the run records committed in the repository alone.

    python -m experiments.rebuild_tables [--records results/runs] [--results-dir results]

Reads every ``final.json`` (and, for the learning curves, ``metrics.csv``) under ``--records`` (what
``python -m experiments.campaign --commit`` commits; no runs folder needed) and writes:

- ``cifar10_{d_sweep,s_sweep,compression}_budget.{csv,md}`` and their figures: the paper's three CIFAR-10
  tables on the ``budget`` recipe (mean ± std over seeds, each Ghost configuration's paired difference from its
  host, and in the sweeps from Ghost s=2 d=3, with 95 % intervals);
- ``figures/cifar10_learning_curves_budget.png``: the compression table's learning curves (training loss per
  epoch, test accuracy at the test points, mean over seeds);
- ``cifar10_schedule_budget.{csv,md}`` and ``figures/cifar10_schedule_budget.png``: the four models of the
  compression table at 10 epochs (``budget``) and 30 epochs (``budget30``), the Ghost-minus-host gap at both
  lengths and the 30-epoch learning curves;
- ``imagenette_recipe_search.{csv,md}``: the candidate Imagenette recipes (:data:`SEARCH_CANDIDATES`, equal
  ResNet-50 cost), each scored by ResNet-50 on the validation split held out of the training images, and the one
  chosen (:func:`search_winner`);
- ``imagenette_resnet50.{csv,md}`` and ``imagenette_small_nets.{csv,md}`` with their figures: the two ImageNet-format
  tables on Imagenette, trained with the chosen recipe.

A record of another recipe spec, data copy or identity than the rest of its table is refused with one line
naming it; a folder without ``final.json`` is an unfinished run and never enters a table. The output is a
function of the records: the test suite checks that the committed tables equal a rebuild.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from experiments._cli import check_results_dir, cli_errors, results_dir
from experiments._scale import figure_note, table_banner
from experiments._tables import (
    CIFAR_COMPRESSION,
    IMAGENETTE_RESNET50,
    IMAGENETTE_SMALL_NETS,
    check_consistent,
    d_sweep,
    format_accuracy,
    format_difference,
    hardware_note,
    s_sweep,
    table_frame,
    table_runs,
    table_stem,
    write_table,
)
from experiments.plotting import configuration_curves, plot_learning_curves
from ghost.io import save_figure_atomic, write_text_atomic
from ghost.runs import differences
from ghost.train import Dataset, Recipe, Scale, find_runs, learning_curves, load_recipe, runs_frame

COMMAND = "python -m experiments.rebuild_tables"
CIFAR_TABLES = (d_sweep(Dataset.CIFAR10, "vgg16_cifar"), s_sweep(Dataset.CIFAR10, "vgg16_cifar"), CIFAR_COMPRESSION)
TABLE_RECIPE = "budget"
SCHEDULE = ("budget", "budget30")  # the same recipe at two lengths
SCHEDULE_STEM = "cifar10_schedule_budget"
CURVES_STEM = "cifar10_learning_curves_budget"
SEARCH_CANDIDATES = ("imagenette-64px", "imagenette-96px", "imagenette-128px")
"""The Imagenette recipes the search compares: equal ResNet-50 cost, lower resolution against more epochs."""
SEARCH_MODEL = ("resnet50", None, None)
SEARCH_STEM = "imagenette_recipe_search"
IMAGENETTE_TABLES = (IMAGENETTE_RESNET50, IMAGENETTE_SMALL_NETS)  # written under their own names


def table_files(out: Path) -> list[Path]:
    """Every file :func:`rebuild` can write into ``out`` (tables and figures)."""
    recipe = load_recipe(TABLE_RECIPE)
    stems = [*(table_stem(table, recipe) for table in CIFAR_TABLES), SCHEDULE_STEM,
             *(table.name for table in IMAGENETTE_TABLES)]
    return [*(path for stem in stems for path in (out / f"{stem}.csv", out / f"{stem}.md",
                                                  out / "figures" / f"{stem}.png")),
            out / f"{SEARCH_STEM}.csv", out / f"{SEARCH_STEM}.md", out / "figures" / f"{CURVES_STEM}.png"]


def recorded_runs(records: Path, recipe: Recipe, validation: bool = False) -> pd.DataFrame:
    """The committed records of ``recipe`` (one row each, :func:`ghost.train.runs_frame`): its test-split runs, or
    with ``validation`` its validation runs (which choose recipes and never enter a table); refuses a record
    trained with another spec of the recipe than the shipped one."""
    runs = runs_frame(find_runs(records / recipe.name))
    if not runs.empty:
        runs = runs[runs["validation"] == validation].reset_index(drop=True)
    for _, run in runs.iterrows():
        spec = json.loads(run["shared_identity"])["recipe_spec"]
        if spec != recipe.to_dict():
            raise ValueError(f"the record {run['run_dir']} was trained with another spec of the recipe {recipe.name} "
                             f"than the shipped one ({differences(recipe.to_dict(), spec)}); move it out of the "
                             "records or retrain it")
    return runs


def plot_compression_curves(records: list[Path]) -> Figure:
    """The learning curves of the compression table's models on the budget recipe, from their ``records``."""
    return plot_learning_curves(learning_curves(records), title="Learning curves of the compression table (recipe "
                                "budget, mean over seeds): " + figure_note(Scale.BUDGET))


def schedule_frame(frames: dict[str, pd.DataFrame], recipes: dict[str, Recipe]) -> pd.DataFrame:
    """The compression table's rows at each length of :data:`SCHEDULE`, one block per recipe."""
    blocks = []
    for name, runs in frames.items():
        block = table_frame(CIFAR_COMPRESSION, runs)
        block.insert(4, "schedule_epochs", recipes[name].epochs)
        blocks.append(block)
    return pd.concat(blocks, ignore_index=True)


def plot_schedule(df: pd.DataFrame, long_runs: pd.DataFrame) -> Figure:
    """Left: the Ghost-minus-host gap (paired by seed, 95 % interval where n >= 2) against the schedule length,
    the paper's gap dashed. Right: test accuracy after every epoch of the long runs."""
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    gap, curve = fig.subplots(1, 2)
    for _, rows in df[df["host"].notna()].groupby("name", sort=False):
        rows = rows.sort_values("schedule_epochs")
        low = (rows["diff_mean"] - rows["diff_ci_low"]).fillna(0)
        high = (rows["diff_ci_high"] - rows["diff_mean"]).fillna(0)
        line = gap.errorbar(rows["schedule_epochs"], rows["diff_mean"], yerr=[low, high], marker="o", capsize=4,
                            label=f"{rows['name'].iloc[0]} − {rows['host'].iloc[0]}")
        paper = rows["paper_diff"].dropna()
        if len(paper):
            gap.axhline(paper.iloc[0], color=line[0].get_color(), linestyle="--", alpha=0.6,
                        label=f"paper (164 epochs): {paper.iloc[0]:+g}")
    gap.axhline(0, color="black", linewidth=0.8)
    gap.set_xticks(sorted(set(df["schedule_epochs"])))
    gap.set_xlabel("training length (epochs)")
    gap.set_ylabel("top-1 difference, Ghost − host (points)")
    gap.set_title("Ghost-minus-host gap (paired by seed, 95 % CI)", fontsize=10)
    gap.legend(fontsize=7)
    gap.grid(alpha=0.3)
    curves = learning_curves([Path(run) for run in long_runs["run_dir"]])
    for name, rows in configuration_curves(curves):
        tested = rows.dropna(subset=["test_acc"]).groupby("epoch")["test_acc"].mean()
        curve.plot(tested.index, tested, marker=".", label=name)
    curve.set_xlabel("epoch")
    curve.set_ylabel("CIFAR-10 test top-1 (%)")
    curve.set_title("test accuracy per epoch, 30-epoch runs (mean over seeds)", fontsize=10)
    curve.legend(fontsize=7)
    curve.grid(alpha=0.3)
    fig.suptitle(figure_note(Scale.BUDGET, "short CPU schedules, not comparable to the paper's"), fontsize=9)
    return fig


def _schedule_markdown(df: pd.DataFrame, recipes: dict[str, Recipe]) -> str:
    lines = ["# CIFAR-10: does the Ghost gap close with longer training? (budget recipe at 10 and 30 epochs)", "",
             table_banner(Scale.BUDGET), "",
             "| Model | Epochs | Top-1 (%) | Δ vs host (95 % CI) | Paper top-1 (%) | Paper Δ |",
             "|---|---:|---:|---:|---:|---:|"]
    for _, row in df.iterrows():
        paper_diff = "—" if pd.isna(row.get("paper_diff")) else f"{row['paper_diff']:+g}"
        paper = "—" if pd.isna(row["paper_acc"]) else f"{row['paper_acc']:g}"
        lines.append(f"| {row['name']} | {row['schedule_epochs']} | {format_accuracy(row)} | "
                     f"{format_difference(row)} | {paper} | {paper_diff} |")
    lines += ["", "Final-epoch test accuracy (never best-on-test), mean ± sample std over seeds; Δ paired by seed",
              "with a Student-t 95 % interval (none for a single pair). The paper's numbers are at 164 epochs.", "",
              "## Provenance", ""]
    for name, recipe in recipes.items():
        lines.append(f"- recipe `{name}` ({recipe.epochs} epochs): {recipe.description}")
    lines += [hardware_note(df), f"- training setting: {'; '.join(sorted(set(df['setting']) - {''}))}",
              f"- commit: {'; '.join(sorted(set('; '.join(df['commit']).split('; ')) - {''}))}",
              f"- training time of these runs: {df['train_time_s'].sum() / 60:.1f} min",
              f"- table written by: `{COMMAND}`"]
    return "\n".join(lines) + "\n"


def search_frame(records: Path) -> pd.DataFrame:
    """One row per :data:`SEARCH_CANDIDATES` recipe: its resolution and length, and ResNet-50's final top-1 on the
    validation split (seed 0; ``nan`` until its record exists), with the run's time and hardware; ``chosen`` marks
    :func:`search_winner`'s pick."""
    rows = []
    for name in SEARCH_CANDIDATES:
        recipe = load_recipe(name)
        runs = recorded_runs(records, recipe, validation=True)
        runs = runs[(runs["model"] == SEARCH_MODEL[0]) & (runs["seed"] == 0)] if not runs.empty else runs
        nan = float("nan")
        scored = {"val_acc": nan, "val_acc_running_bn": nan, "train_images": "", "test_images": "",
                  "wall_time_s": nan, "hardware": "", "commit": ""}
        if len(runs):  # the candidate's run is recorded
            run = runs.iloc[0]
            scored = {"val_acc": run["test_acc"], "val_acc_running_bn": run["test_acc_running_bn"],
                      "train_images": run["train_images"], "test_images": run["test_images"],
                      "wall_time_s": round(run["wall_time_s"], 1), "hardware": run["hardware"],
                      "commit": run["commit"]}
        rows.append({"recipe": name, "train_crop": recipe.train_crop, "epochs": recipe.epochs, **scored})
    df = pd.DataFrame(rows)
    df["chosen"] = df["recipe"] == _winner(df)
    return df


def _winner(df: pd.DataFrame) -> str | None:
    if df["val_acc"].isna().any():
        return None
    return str(df.loc[df["val_acc"].idxmax(), "recipe"])  # a tie goes to the first listed (the cheapest to run)


def search_winner(records: Path) -> str | None:
    """The Imagenette recipe the tables train with: the candidate whose ResNet-50 scores best on the validation
    split, ``None`` until every candidate's validation run is recorded."""
    return _winner(search_frame(records))


def _search_markdown(df: pd.DataFrame) -> str:
    winner = _winner(df)
    lines = ["# Imagenette: choosing the budget recipe on a validation split", "", table_banner(Scale.BUDGET), "",
             "| Recipe | Resolution (px) | Epochs | ResNet-50 validation top-1 (%) | with running BN (%) | "
             "Training time (min) | Chosen |", "|---|---:|---:|---:|---:|---:|---|"]
    for _, row in df.iterrows():
        minutes = "—" if pd.isna(row["wall_time_s"]) else f"{row['wall_time_s'] / 60:.1f}"
        acc = "— (not trained yet)" if pd.isna(row["val_acc"]) else f"{row['val_acc']:.2f}"
        running = "—" if pd.isna(row["val_acc_running_bn"]) else f"{row['val_acc_running_bn']:.2f}"
        lines.append(f"| `{row['recipe']}` | {row['train_crop']} | {row['epochs']} | {acc} | {running} | {minutes} | "
                     f"{'yes' if row['chosen'] else ''} |")
    choice = (f"The tables train with `{winner}`." if winner else
              "No choice yet: the tables wait until every candidate is scored.")
    lines += ["", "Each candidate costs about one hour of one CPU thread for ResNet-50 (lower resolution, more",
              "epochs).",
              "ResNet-50, seed 0, trains on the training images minus a validation split (10 % of each class, fixed",
              "by seed 0) and is scored on that split after its last epoch; the highest score chooses the recipe of",
              "every Imagenette table (a tie goes to the first listed). Imagenette's val folder, the test set of the",
              "tables, plays no part. One seed per candidate: differences of a point or less are within seed noise,",
              f"and the choice is only the best guess they allow. {choice}", "", "## Provenance", ""]
    for name in SEARCH_CANDIDATES:
        lines.append(f"- `{name}`: {load_recipe(name).description}")
    lines += [f"- training / validation images: {'; '.join(sorted(set(df['train_images'].astype(str)) - {''}))} / "
              f"{'; '.join(sorted(set(df['test_images'].astype(str)) - {''}))}",
              f"- hardware: {'; '.join(sorted(set(df['hardware']) - {''})) or '—'}",
              f"- commit: {'; '.join(sorted(set('; '.join(df['commit']).split('; ')) - {''})) or '—'}",
              f"- table written by: `{COMMAND}`"]
    return "\n".join(lines) + "\n"


def _imagenette_records(records: Path) -> tuple[pd.DataFrame, Recipe | None, pd.DataFrame]:
    """The recipe search, the recipe it chose (``None`` before it has) and that recipe's checked records."""
    search = search_frame(records)
    winner = _winner(search)
    if winner is None:
        return search, None, pd.DataFrame()
    recipe = load_recipe(winner)
    runs = recorded_runs(records, recipe)
    for table in IMAGENETTE_TABLES:
        check_consistent(table, runs)
    return search, recipe, runs


def _write_imagenette(search: pd.DataFrame, recipe: Recipe | None, runs: pd.DataFrame, out: Path) -> list[Path]:
    """The recipe search's table once a candidate is scored, and the Imagenette tables once it has chosen."""
    if search["val_acc"].isna().all():
        return []
    write_text_atomic(results_dir(out) / f"{SEARCH_STEM}.csv", search.to_csv(index=False))
    write_text_atomic(out / f"{SEARCH_STEM}.md", _search_markdown(search))
    written = [out / f"{SEARCH_STEM}.csv"]
    if recipe is not None and not runs.empty:
        for table in IMAGENETTE_TABLES:
            write_table(table, runs, recipe, out, command=COMMAND, stem=table.name)
            written.append(out / f"{table.name}.csv")
    return written


def rebuild(records: Path, out: Path) -> list[Path]:
    """Write every table the records allow into ``out`` (created only once every record has been checked); the
    CSV files written."""
    table_recipe = load_recipe(TABLE_RECIPE)
    runs = recorded_runs(records, table_recipe)
    recipes = {name: load_recipe(name) for name in SCHEDULE}
    frames = {name: recorded_runs(records, recipe) for name, recipe in recipes.items()}
    for table in CIFAR_TABLES:
        check_consistent(table, runs)
    for frame in frames.values():
        check_consistent(CIFAR_COMPRESSION, frame)
    imagenette = _imagenette_records(records)
    written = []
    if not runs.empty:
        for table in CIFAR_TABLES:
            write_table(table, runs, table_recipe, results_dir(out), command=COMMAND)
            written.append(out / f"{table_stem(table, table_recipe)}.csv")
        if curve_records := [Path(run) for run in table_runs(CIFAR_COMPRESSION, runs)["run_dir"]]:
            save_figure_atomic(plot_compression_curves(curve_records), out / "figures" / f"{CURVES_STEM}.png")
    if all(not frame.empty for frame in frames.values()):
        df = schedule_frame(frames, recipes)
        write_text_atomic(results_dir(out) / f"{SCHEDULE_STEM}.csv", df.to_csv(index=False))
        write_text_atomic(out / f"{SCHEDULE_STEM}.md", _schedule_markdown(df, recipes))
        save_figure_atomic(plot_schedule(df, frames[SCHEDULE[-1]]), out / "figures" / f"{SCHEDULE_STEM}.png")
        written.append(out / f"{SCHEDULE_STEM}.csv")
    return written + _write_imagenette(*imagenette, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=Path, default=Path("results/runs"), help="the committed run records")
    p.add_argument("--results-dir", type=Path, default=Path("results"), help="where tables go (default results/)")
    args = p.parse_args(argv)
    with cli_errors():
        if not args.records.is_dir():
            raise ValueError(f"{args.records} is not a folder of run records; pass --records")
        written = rebuild(args.records, check_results_dir(args.results_dir))
    for path in written:
        print(f"wrote {path} (.csv/.md and its figure)")
    if not written:
        print(f"no records under {args.records} make a table yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
