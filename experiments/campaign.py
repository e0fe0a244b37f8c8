"""The training campaigns behind the committed tables: one resumable command trains every run a campaign needs,
in its order, several runs at once, and keeps each finished run's record in the repository.

    python -m experiments.campaign cifar10 --commit     # all of it: finished runs skipped, the others resumed
    python -m experiments.campaign cifar10 --dry-run    # what is finished, what is left, in which order
    python -m experiments.campaign cifar10 --seeds 0    # only these seeds of it
    python -m experiments.campaign cifar10 imagenette --commit   # both, side by side (one job each at --jobs 2)

``cifar10`` trains the three CIFAR-10 tables at three seeds and the 30-epoch schedule study. ``imagenette`` first
scores the candidate recipes (:data:`experiments.rebuild_tables.SEARCH_CANDIDATES`: ResNet-50, seed 0, on a
validation split held out of the training images), then, once every candidate is scored, trains the two Imagenette
tables with the best one (the plan grows when the search finishes). Several campaigns share the ``--jobs`` slots
fairly: a free slot goes to the campaign with the fewest runs in progress.

Runs train in ``--runs-dir`` (default ``$GHOST_RUNS_DIR`` or ``~/ghost-runs``: outside the checkout, so that a
fresh clone does not lose them), ``--jobs`` at once (default 2, each on ``--threads`` CPU threads, default 1).
Each finished run's record (``final.json`` and ``metrics.csv``, never weights) is copied to
``<records>/<recipe>/<model>[-s<s>-d<d>]/seed<k>/`` (default ``results/runs``) as soon as it finishes, and with
``--commit`` committed to git at once together with the tables rebuilt from the records
(``python -m experiments.rebuild_tables``, run with the checkout's own code), so that a lost machine loses at most
the runs in progress and every commit's tables equal its records. A run whose
record is in the repository counts as finished even when its run folder is gone; a record of another
configuration (recipe, data copy, code-relevant identity) stops the campaign with one line naming it.

Ctrl-C or SIGTERM stops the workers too; every run keeps its last epoch's checkpoint and the same command
resumes it exactly. Progress: runs done, the runs in progress (epoch, images/s) and an ETA from the measured
epoch times of each model.
"""

from __future__ import annotations

import argparse
import csv
import logging
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, NoReturn

from tqdm.auto import tqdm

from experiments._cli import check_device, check_results_dir, cli_errors, fail
from experiments._tables import CIFAR_COMPRESSION, IMAGENETTE_RESNET50, IMAGENETTE_SMALL_NETS, d_sweep, s_sweep
from experiments.rebuild_tables import SEARCH_CANDIDATES, SEARCH_MODEL, search_winner, table_files
from ghost.data import load_cifar10
from ghost.paper import PaperKey
from ghost.provenance import command_line
from ghost.runs import FINAL, METRICS, RunFolder
from ghost.train import (
    Dataset,
    Recipe,
    TrainConfig,
    data_copy_fingerprint,
    export_record,
    load_recipe,
    run_dir,
    run_identity,
    train,
)

RUNS_ENV_VAR = "GHOST_RUNS_DIR"
_STATUS_EVERY_S = 60.0


@dataclass(frozen=True)
class Stage:
    """Runs of one recipe: every configuration at each seed (all configurations of a seed before the next);
    ``validation``: on the validation split held out of the training images (recipe search), not the test split."""

    recipe: str
    configs: tuple[PaperKey, ...]
    seeds: tuple[int, ...]
    validation: bool = False


def _cifar10_campaign(records: Path) -> tuple[Stage, ...]:
    """Issue order: the budget tables' 10 configurations at seed 0 (those never trained before first), seeds 1-2
    of the compression table, seeds 1-2 of the sweeps, then the 30-epoch schedule study (the VGG pair first)."""
    compression = CIFAR_COMPRESSION.configs
    sweeps = tuple(dict.fromkeys(key for table in (d_sweep(Dataset.CIFAR10, "vgg16_cifar"),
                                                   s_sweep(Dataset.CIFAR10, "vgg16_cifar"))
                                 for key in table.configs if key not in compression))
    never_trained = (("ghost_vgg16_cifar", 2, 5), ("ghost_vgg16_cifar", 2, 7), ("ghost_vgg16_cifar", 4, 3),
                     ("ghost_vgg16_cifar", 5, 3))
    seed0 = tuple(dict.fromkeys((*never_trained, *compression, *sweeps)))
    return (
        Stage("budget", seed0, (0,)),
        Stage("budget", compression, (1, 2)),
        Stage("budget", sweeps, (1, 2)),
        Stage("budget30", compression, (0,)),
    )


IMAGENETTE_HEADLINE = (("resnet50", None, None), ("ghost_resnet50", 2, 3), ("ghostnet_100", None, None),
                       ("mobilenet_v3_large", None, None))
"""The Imagenette rows trained at three seeds; the others of the two tables get seed 0."""


def _imagenette_campaign(records: Path) -> tuple[Stage, ...]:
    """The recipe search (ResNet-50 on the validation split, one run per candidate recipe), then, once the records
    hold every candidate's score, both Imagenette tables with the winner: seed 0 of every row (the headline rows
    first), then seeds 1-2 of the headline rows."""
    search = tuple(Stage(name, (SEARCH_MODEL,), (0,), validation=True) for name in SEARCH_CANDIDATES)
    winner = search_winner(records)
    if winner is None:
        return search
    rows = tuple(dict.fromkeys((*IMAGENETTE_HEADLINE, *IMAGENETTE_RESNET50.configs, *IMAGENETTE_SMALL_NETS.configs)))
    return (*search, Stage(winner, rows, (0,)), Stage(winner, IMAGENETTE_HEADLINE, (1, 2)))


CAMPAIGNS: dict[str, Callable[[Path], tuple[Stage, ...]]] = {
    "cifar10": _cifar10_campaign, "imagenette": _imagenette_campaign}
"""Each campaign's stages, given the records folder (a campaign may plan more once some records exist)."""


@dataclass(frozen=True)
class Planned:
    """One run of a campaign: what it trains, its run folder, its record folder and the identity both hold."""

    campaign: str
    config: TrainConfig
    run: Path
    record: Path
    identity: dict[str, Any]

    @property
    def label(self) -> str:
        """``<recipe> <model>[-s<s>-d<d>] seed<k>[-val]``, as in the folder names."""
        return f"{self.config.recipe.name} {self.run.parent.name} {self.run.name}"


def default_runs_dir() -> Path:
    """``$GHOST_RUNS_DIR``, else ``~/ghost-runs``."""
    return Path(os.environ.get(RUNS_ENV_VAR) or Path.home() / "ghost-runs").expanduser()


@dataclass
class Planner:
    """Plans campaigns' runs from the records: their recipes and data-copy fingerprints are looked up once."""

    seeds: set[int] | None
    runs_dir: Path
    records: Path
    data: str | None
    _recipes: dict[str, Recipe] = field(default_factory=dict)
    _fingerprints: dict[Dataset, str] = field(default_factory=dict)

    def plan(self, campaign: str) -> list[Planned]:
        """The campaign's runs in order (only ``seeds`` if given), each with the identity its record must have."""
        planned = []
        for stage in CAMPAIGNS[campaign](self.records):
            recipe = self._recipes.setdefault(stage.recipe, load_recipe(stage.recipe))
            if recipe.dataset not in self._fingerprints:
                self._fingerprints[recipe.dataset] = data_copy_fingerprint(recipe.dataset, self.data)
            for seed in stage.seeds:
                if self.seeds is not None and seed not in self.seeds:
                    continue
                for model, ratio, dw_size in stage.configs:
                    config = TrainConfig(model, recipe, seed=seed, ratio=ratio, dw_size=dw_size,
                                         validation=stage.validation)
                    identity = run_identity(config, self._fingerprints[recipe.dataset], recipe.batch_size)
                    planned.append(Planned(campaign, config, run_dir(config, self.runs_dir),
                                           run_dir(config, self.records), identity))
        return planned


def _recorded(run: Planned) -> bool:
    """Whether the run's record is in the repository; raises (naming it) for a record of another run."""
    return RunFolder(run.record, run.identity).finished() is not None


def _git(args: list[str], cwd: Path) -> str | None:
    """Run ``git args`` in ``cwd``; ``None`` on success, else git's complaint in one line."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else " ".join((done.stderr or done.stdout).split())[:300]


def _commit(record: Path, results: Path, message: str) -> str | None:
    """Rebuild the tables from the records with the checkout's own code (``experiments.rebuild_tables`` run in
    the repository that holds ``record``) and commit the record with the tables; ``None`` on success, else what
    went wrong, in one line (the record stays where it is, uncommitted)."""
    record = record.resolve()
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=record, capture_output=True, text=True,
                         check=False).stdout.strip()
    if not top:
        return f"{record} is not inside a git repository"
    rebuilt = subprocess.run([sys.executable, "-m", "experiments.rebuild_tables", "--records",
                              str(record.parents[2]), "--results-dir", str(results.resolve())],
                             cwd=top, capture_output=True, text=True, check=False)
    if rebuilt.returncode != 0:
        return "rebuilding the tables failed: " + " ".join(rebuilt.stderr.split())[-300:]
    paths = [str(record), *(str(p) for p in table_files(results.resolve()) if p.is_file())]
    return _git(["add", "--", *paths], Path(top)) or _git(["commit", "--quiet", "-m", message, "--", *paths],
                                                           Path(top))


def _keep_record(run: Planned, commit: bool, results: Path) -> str:
    """Copy a finished run's record into the repository (and commit it with the rebuilt tables); a line saying
    what was done."""
    export_record(run.run, run.record)
    final = RunFolder(run.record, run.identity).finished()
    score = f"{'validation' if run.config.validation else 'test'} top-1 {final.test_acc:.2f} %"
    line = f"recorded {run.label}: {score} in {final.wall_time_s / 60:.1f} min"
    if commit:
        problem = _commit(run.record, results, f"runs: {run.label}, {score}")
        line += f" (not committed: {problem})" if problem else " (committed with the rebuilt tables)"
    return line


def _metrics(folder: Path) -> list[dict[str, str]]:
    path = folder / METRICS
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _speed_key(run: Planned) -> tuple[str, int | None]:
    """What an epoch's time depends on: the model configuration (its folder name) and the training resolution."""
    return run.run.parent.name, run.config.recipe.train_crop


def _epoch_seconds(planned: list[Planned]) -> dict[tuple[str, int | None], float]:
    """Median measured epoch time of each model configuration at each resolution (any recipe, seed or folder)."""
    times: dict[tuple[str, int | None], list[float]] = {}
    for run in planned:
        for row in _metrics(run.run) or _metrics(run.record):
            times.setdefault(_speed_key(run), []).append(float(row["epoch_time_s"]))
    return {key: statistics.median(values) for key, values in times.items()}


def eta_seconds(todo: list[Planned], planned: list[Planned], jobs: int) -> float | None:
    """Seconds until ``todo`` is trained at ``jobs`` runs at once, from the measured epoch times (models not
    measured yet count at the median of the others); ``None`` before anything was measured."""
    seconds = _epoch_seconds(planned)
    if not seconds:
        return None
    fallback = statistics.median(seconds.values())
    left = 0.0
    for run in todo:
        remaining = max(0, (run.config.recipe.epochs or 0) - len(_metrics(run.run)))
        left += remaining * seconds.get(_speed_key(run), fallback)
    return left / jobs


def _status(running: dict[BaseProcess, Planned], todo: list[Planned], planned: list[Planned], jobs: int) -> str:
    parts = []
    for run in running.values():
        rows = _metrics(run.run)
        speed = f", {float(rows[-1]['images_per_s']):.0f} img/s" if rows else ""
        parts.append(f"{run.label} epoch {len(rows)}/{run.config.recipe.epochs}{speed}")
    eta = eta_seconds([*running.values(), *todo], planned, jobs)
    return "; ".join(parts) + (f"; ETA {eta / 3600:.1f} h" if eta is not None else "; ETA after the first epoch")


def _exit_on_sigterm(signum: int, frame: Any) -> NoReturn:
    raise SystemExit(128 + signum)


def _worker(config: TrainConfig, out: Path, data: str | None, device: str, threads: int, command: str) -> None:
    """One run in its own process (its checkpoint is written atomically after every epoch)."""
    import torch

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the workers itself
    torch.set_num_threads(threads)
    try:
        train(config, out, data_root=data, device=device, progress=False, command=command)
    except ValueError as error:
        fail(f"{out}: {error}")


def _interrupt(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt


def _next(todo: list[Planned], running: dict[BaseProcess, Planned], order: list[str]) -> Planned:
    """Take the next run to start out of ``todo``: the first of the campaign with the fewest runs in progress
    (a tie goes to the campaign named first)."""
    busy = Counter(run.campaign for run in running.values())
    name = min({run.campaign for run in todo}, key=lambda campaign: (busy[campaign], order.index(campaign)))
    return todo.pop(next(i for i, run in enumerate(todo) if run.campaign == name))


def _replan(planner: Planner, campaigns: list[str], args: argparse.Namespace,
            skip: set[Path]) -> tuple[list[Planned], list[Planned]]:
    """Every planned run of ``campaigns`` and those still to train, minus the run folders in ``skip`` (in progress
    or failed in this invocation); a campaign may plan more runs once some records exist."""
    planned = [run for campaign in campaigns for run in planner.plan(campaign)]
    todo = [run for run in _pending(planned, args.commit and not args.dry_run, args.results_dir)
            if run.run not in skip]
    return planned, todo


def run_campaign(planner: Planner, campaigns: list[str], args: argparse.Namespace) -> int:
    """Train the campaigns' runs ``args.jobs`` at a time, recording each finished run and planning again after it;
    the number of runs that failed."""
    context = multiprocessing.get_context("spawn")
    command, running, failed = command_line(), {}, set()
    planned, todo = _replan(planner, campaigns, args, set())
    bar = tqdm(total=len(planned), initial=len(planned) - len(todo), unit="run", desc="campaign",
               dynamic_ncols=True, mininterval=_STATUS_EVERY_S, disable=args.no_progress)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while todo or running:
            while todo and len(running) < args.jobs:
                run = _next(todo, running, campaigns)
                proc = context.Process(target=_worker, name=run.label, daemon=False,
                                       args=(run.config, run.run, args.data, args.device, args.threads, command))
                proc.start()
                running[proc] = run
            bar.set_postfix_str(_status(running, todo, planned, args.jobs), refresh=True)
            for sentinel in wait([proc.sentinel for proc in running], timeout=_STATUS_EVERY_S):
                proc = next(p for p in running if p.sentinel == sentinel)
                run = running.pop(proc)
                proc.join()
                if proc.exitcode == 0 and (run.run / FINAL).is_file():
                    bar.write(_keep_record(run, args.commit, args.results_dir))
                else:
                    failed.add(run.run)
                    bar.write(f"failed {run.label} (exit code {proc.exitcode}); see its error above")
            planned, todo = _replan(planner, campaigns, args, failed | {run.run for run in running.values()})
            bar.total, bar.n = len(planned), len(planned) - len(todo) - len(running) - len(failed)
    finally:
        for proc in running:
            proc.terminate()
        for proc in running:
            proc.join()
        bar.close()
    return len(failed)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("campaign", nargs="+", choices=sorted(CAMPAIGNS),
                   help="which campaigns (several share the --jobs slots)")
    p.add_argument("--seeds", help="only these seeds, e.g. 0 or 1,2 (default: all of the campaign's)")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help=f"where runs train (default ${RUNS_ENV_VAR} or ~/ghost-runs, outside the checkout)")
    p.add_argument("--records", type=Path, default=Path("results/runs"),
                   help="where finished runs' records go (default results/runs)")
    p.add_argument("--commit", action="store_true",
                   help="as soon as a run finishes, rebuild the tables and git-commit them with its record")
    p.add_argument("--results-dir", type=Path, default=Path("results"),
                   help="where --commit rebuilds the tables (default results/)")
    p.add_argument("--data", help="the data copy of a single campaign (default: $GHOST_CIFAR10 or $GHOST_IMAGENET)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--jobs", type=int, default=2, help="runs trained at once (default 2)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of each run (default 1)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state; train nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _seeds(value: str | None) -> set[int] | None:
    if value is None:
        return None
    try:
        seeds = {int(part) for part in value.split(",")}
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated integers such as 0,1,2, got {value!r}") from None
    if min(seeds) < 0:
        raise ValueError(f"seeds are >= 0, got {value!r}")
    return seeds


def _pending(planned: list[Planned], commit: bool, results: Path) -> list[Planned]:
    """The runs still to train: a run finished in the runs folder but not yet recorded is recorded now."""
    todo = []
    for run in planned:
        if _recorded(run):
            continue
        if RunFolder(run.run, run.identity).finished() is not None:
            print(_keep_record(run, commit, results), flush=True)
        else:
            todo.append(run)
    return todo


def _dry_run(planned: list[Planned], todo: list[Planned], campaigns: list[str], records: Path) -> None:
    for run in planned:
        state = "to train" if run in todo else "finished"
        started = len(_metrics(run.run))
        print(f"  {run.label}: {state}" + (f" ({started} epochs done)" if run in todo and started else ""))
    if "imagenette" in campaigns and search_winner(records) is None:
        print("  imagenette tables: planned once every candidate recipe of the search is scored")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    campaigns = list(dict.fromkeys(args.campaign))
    with cli_errors(resume_hint="run the same command again: finished runs are skipped, the others resume"):
        check_device(args.device)
        if args.jobs < 1 or args.threads < 1:
            raise ValueError(f"--jobs and --threads must be >= 1, got {args.jobs} and {args.threads}")
        if args.data and len(campaigns) > 1:
            raise ValueError("--data names the data copy of one campaign; for several, set $GHOST_CIFAR10 and "
                             "$GHOST_IMAGENET instead")
        runs_dir = check_results_dir(args.runs_dir or default_runs_dir())
        records = check_results_dir(args.records)
        planner = Planner(_seeds(args.seeds), runs_dir, records, args.data)
        planned, todo = _replan(planner, campaigns, args, set())
        print(f"campaign {' + '.join(campaigns)}: {len(planned)} runs planned, {len(planned) - len(todo)} finished, "
              f"{len(todo)} to train in {runs_dir} ({args.jobs} at once); records in {records}", flush=True)
        if args.dry_run:
            _dry_run(planned, todo, campaigns, records)
            return 0
        if any(run.config.recipe.dataset == Dataset.CIFAR10 for run in todo):
            for split in (True, False):  # decode (and cache) CIFAR-10 once, not in every worker
                load_cifar10(args.data, train=split)
        failed = run_campaign(planner, campaigns, args)
    if failed:
        fail(f"{failed} runs failed (their errors are above); fix the cause and run the same command again", 1)
    print("campaign finished: every run is recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
