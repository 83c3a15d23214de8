"""Promotion: the best trial (by validation accuracy) is evaluated once on the test split.

The evaluation is recorded in the study (user attribute ``promotions``) before the report
is written, so a second look at the test split is always visible: ``promote`` refuses it
unless forced, and a forced report says it is not a clean test.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import download_artifact
from optuna.trial import FrozenTrial, TrialState

from gestures.artifact import load_model
from gestures.evaluate import evaluate
from hpo.report import ReportInputs, write_report
from hpo.service import (
    PROMOTIONS_ATTR,
    StudyError,
    StudyStatus,
    load_study,
    study_data,
    study_split,
    study_status,
)
from hpo.storage import artifact_store, resolve_url


@dataclass
class Promoted:
    out: Path
    report: dict[str, Any]

    @property
    def model_file(self) -> Path:
        return self.out / "model.pt"


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The completed trial with the highest validation accuracy and a saved checkpoint."""
    candidates = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if t.value is not None and t.user_attrs.get("checkpoint_artifact")]
    if not candidates:
        raise StudyError(f"study {study.study_name!r} has no completed trial with a checkpoint; "
                         f"run 'hpo worker {study.study_name}' first")
    return max(candidates, key=lambda t: (t.value, -t.number))


def promote(name: str, storage_url: str | None = None, out: Path | None = None,
            force: bool = False) -> Promoted:
    url = resolve_url(storage_url)
    study, spec = load_study(name, url)
    previous = study.user_attrs.get(PROMOTIONS_ATTR, [])
    if previous and not force:
        p = previous[-1]
        raise StudyError(
            f"study {name!r} was already evaluated on its test split at {p['time']} (trial "
            f"{p['trial']}, test accuracy {p['test_accuracy']:.1%}, report {p['report']}). The "
            "test split is looked at once; pass --force to evaluate again, and the new report "
            "will be marked as not a clean test")
    best = best_trial(study)
    out = Path(out) if out is not None else Path("reports") / name
    out.mkdir(parents=True, exist_ok=True)
    model_file = out / "model.pt"
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        download_artifact(artifact_store=artifact_store(url), artifact_id=best.user_attrs[
            "checkpoint_artifact"], file_path=str(Path(tmp) / "model.pt"))
        os.replace(Path(tmp) / "model.pt", model_file)
    saved = load_model(model_file)
    data = study_data(spec)
    split = study_split(spec, data)
    evaluation = evaluate(saved, data, split.paths("test"), seed=spec.seed)
    record = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "trial": best.number,
              "test_accuracy": evaluation.accuracy, "n": evaluation.n,
              "ci95": list(evaluation.ci95), "clean": not previous, "report": str(out),
              "previous": previous[-1]["time"] if previous else None}
    study.set_user_attr(PROMOTIONS_ATTR, [*previous, record])  # before anything can fail
    report = write_report(ReportInputs(study, best, evaluation, split.summary(), record,
                                       str(model_file)), out)
    return Promoted(out, report)


def test_summary(promotion: dict[str, Any] | None) -> str:
    """'99.6% (98.7%–100.0%)' for a promotion's test accuracy and 95% CI; '-' if none."""
    if not promotion:
        return "-"
    lo, hi = promotion["ci95"]
    return (f"{promotion['test_accuracy']:.1%} ({lo:.1%}–{hi:.1%})"
            + ("" if promotion["clean"] else ", not a clean test"))


def compare(names: list[str], storage_url: str | None = None) -> list[StudyStatus]:
    """One status per study (best validation accuracy, test accuracy if promoted, trials,
    time): the lab's "transfer vs from scratch" comparison."""
    return [study_status(name, storage_url) for name in names]
