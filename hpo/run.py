"""The main job: check → split → the shipped studies → promote → one folder of results.

Everything of one run lives under its folder: ``check.json``, ``exclude.txt``,
``split.csv``, the SQLite store ``hpo.db`` with its artifacts, one report per study under
``reports/``, and the overall winner (chosen on validation accuracy, never on test) as
``model.pt`` with ``report.md``. Only the decoded-image and feature caches are shared
across runs (``$GESTURES_CACHE``), since they depend on the data alone.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from gestures.data import discover
from gestures.split import SplitConfig, split_dataset
from hpo.promote import Promoted, compare, promote, test_summary
from hpo.report import pct
from hpo.service import StudyStatus, create_study, run_worker
from hpo.studyfile import load_study_file

SHIPPED_STUDIES = Path(__file__).resolve().parents[1] / "studies"


@dataclass(frozen=True)
class RunConfig:
    data: Path
    out: Path | None = None  # default: runs/<timestamp>
    studies: tuple[Path, ...] = ()  # default: the shipped studies/*.toml
    profile: str = "auto"  # "cpu", "gpu", or "auto": gpu when CUDA is present
    seed: int = 0

    def resolved_out(self) -> Path:
        return self.out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")

    def resolved_profile(self) -> str:
        if self.profile == "auto":
            return "gpu" if torch.cuda.is_available() else "cpu"
        return self.profile


@dataclass
class RunResult:
    out: Path
    statuses: list[StudyStatus]
    winner: str
    promoted: dict[str, Promoted]
    minutes: float
    excluded: list[str]

    @property
    def report(self) -> Path:
        return self.out / "report.md"


def run(config: RunConfig, log: Callable[[str], None] = print) -> RunResult:
    start = time.perf_counter()
    out = config.resolved_out()
    out.mkdir(parents=True, exist_ok=True)
    profile = config.resolved_profile()
    log(f"run folder {out} ({profile} budget)")

    split, report = split_dataset(discover(config.data), SplitConfig(seed=config.seed),
                                  exclude_problems=True)
    (out / "check.json").write_text(json.dumps(report.to_dict(), indent=2))
    (out / "exclude.txt").write_text("".join(f"{p}\n" for p in report.exclude()))
    split_file = out / "split.csv"
    split.save(split_file)
    log(f"checked {report.n_images} images, left out {len(report.exclude())} with errors; "
        f"split by hand: " + ", ".join(f"{k} {v['images']} images / {v['hands']} hands"
                                       for k, v in split.summary().items()))

    url = f"sqlite:///{(out / 'hpo.db').resolve()}"
    files = config.studies or tuple(sorted(SHIPPED_STUDIES.glob("*.toml")))
    names = []
    for file in files:
        spec = load_study_file(file, profile, {"data": str(Path(config.data).resolve()),
                                               "split": str(split_file.resolve())})
        create_study(spec, url)
        t = time.perf_counter()
        run_worker(spec.name, url)
        names.append(spec.name)
        log(f"study {spec.name}: {spec.n_trials} trials in {(time.perf_counter() - t) / 60:.1f} "
            "min")

    promoted = {name: promote(name, url, out / "reports" / name) for name in names}
    statuses = compare(names, url)
    ranked = [s for s in statuses if s.best_value is not None]
    winner = max(ranked, key=lambda s: s.best_value or 0.0).name  # validation, not test
    shutil.copyfile(promoted[winner].model_file, out / "model.pt")
    minutes = (time.perf_counter() - start) / 60
    (out / "report.md").write_text(_summary(statuses, winner, promoted[winner], out, minutes))
    return RunResult(out, statuses, winner, promoted, minutes, report.exclude())


def _summary(statuses: list[StudyStatus], winner: str, best: Promoted, out: Path,
             minutes: float) -> str:
    rows = []
    for s in statuses:
        rows.append(f"| [{s.name}](reports/{s.name}/report.md) | {pct(s.best_value)} | "
                    f"{test_summary(s.promotion)} | {s.trials_text} | {s.seconds / 60:.1f} |")
    # The winner's report, with its figure links pointing into its folder.
    rel = best.out.relative_to(out).as_posix()
    body = (best.out / "report.md").read_text()
    body = re.sub(r"\]\((?!https?:)([^)]+\.png)\)", rf"]({rel}/\1)", body)
    return "\n".join([
        "# gesture-hpo run", "",
        f"Finished in {minutes:.1f} minutes. The promoted model is `model.pt` "
        f"(the {winner} study's best trial, chosen on validation accuracy).", "",
        "| study | best val accuracy | test accuracy (95% CI) | trials | minutes in trials |",
        "|---|---|---|---|---|", *rows, "",
        "Test accuracies are on hands never seen in training; each study's test split was "
        "evaluated once.", "", "---", "", body])
