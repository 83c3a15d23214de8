"""The promotion report: ``report.md`` (readable on GitHub), ``report.json``, PNG figures
and ``predictions.csv`` (one row per test image, from which every number is recomputable)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt
import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from gestures.evaluate import Evaluation


@dataclass
class ReportInputs:
    study: optuna.Study
    best: FrozenTrial
    evaluation: Evaluation
    split_summary: dict[str, dict[str, int]]
    promotion: dict[str, Any]  # what was recorded in the study: time, clean, ...
    model_file: str


def pct(x: float | None) -> str:
    """'97.3%'; '-' when there is no number (None, or NaN: no images to score)."""
    return "-" if x is None or math.isnan(x) else f"{x:.1%}"


def _curves_trials(study: optuna.Study, best: FrozenTrial, n_others: int = 4,
                   ) -> list[FrozenTrial]:
    """The best trial, then the next best finished trials that have curves."""
    finished = [t for t in study.get_trials(deepcopy=False,
                                            states=(TrialState.COMPLETE, TrialState.PRUNED))
                if t.user_attrs.get("history") and t.number != best.number]
    finished.sort(key=lambda t: -(t.value if t.value is not None else -1.0))
    return [best, *finished[:n_others]]


def _plot_curves(trials: list[FrozenTrial], path: Path) -> None:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for t in trials:
        h = t.user_attrs["history"]
        epochs = [e["epoch"] for e in h]
        label = f"trial {t.number}" + (" (best)" if t is trials[0] else "") + \
            (" pruned" if t.state == TrialState.PRUNED else "")
        line, = ax_loss.plot(epochs, [e["train_loss"] for e in h], label=label)
        ax_loss.plot(epochs, [e["val_loss"] for e in h], ls="--", color=line.get_color())
        ax_acc.plot(epochs, [e["train_acc"] for e in h], color=line.get_color(), alpha=0.5)
        ax_acc.plot(epochs, [e["val_acc"] for e in h], ls="--", color=line.get_color(),
                    label=label)
    ax_loss.set(title="loss (solid: train, dashed: validation)", xlabel="epoch")
    ax_acc.set(title="accuracy (faint: train, dashed: validation)", xlabel="epoch", ylim=(0, 1))
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_confusion(ev: Evaluation, path: Path) -> None:
    cm = np.array(ev.confusion)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(cm, cmap="Blues")
    for i in range(len(cm)):
        for j in range(len(cm)):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)
    ax.set(xticks=range(len(ev.classes)), yticks=range(len(ev.classes)),
           xticklabels=ev.classes, yticklabels=ev.classes, xlabel="predicted", ylabel="true",
           title="confusion matrix (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_per_class(ev: Evaluation, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    values = [0.0 if math.isnan(v) else v for v in ev.per_class.values()]
    ax.bar(ev.classes, values, color="tab:blue")
    ax.axhline(ev.accuracy, color="black", ls="--", lw=1, label=f"overall {pct(ev.accuracy)}")
    ax.axhline(ev.chance, color="grey", ls=":", lw=1, label=f"chance {pct(ev.chance)}")
    ax.set(ylim=(0, 1.05), title="per-letter test accuracy")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_history(study: optuna.Study, path: Path) -> None:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for state, marker in ((TrialState.COMPLETE, "o"), (TrialState.PRUNED, "x")):
        pts = [(t.number, t.value) for t in trials if t.state == state and t.value is not None]
        if pts:
            ax.scatter(*zip(*pts, strict=True), marker=marker, label=state.name.lower())
    complete = sorted((t.number, t.value) for t in trials
                      if t.state == TrialState.COMPLETE and t.value is not None)
    if complete:
        numbers, values = zip(*complete, strict=True)
        ax.step(numbers, np.maximum.accumulate(values), where="post", color="black",
                label="best so far")
    ax.set(xlabel="trial", ylabel="validation accuracy", title="optimisation history")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


MIN_TRIALS_FOR_IMPORTANCE = 4  # below this PED-ANOVA can only say "all equal"


def _importances(study: optuna.Study) -> dict[str, float]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):  # too few completed trials, or no varying parameter
        return {}


def _plot_importances(importances: dict[str, float], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3))
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="tab:green")
    ax.set(title="parameter importance (PED-ANOVA)", xlabel="importance")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(inputs: ReportInputs, out: Path) -> dict[str, Any]:
    """Writes everything under ``out`` and returns the JSON-able report."""
    out.mkdir(parents=True, exist_ok=True)
    ev, study, best = inputs.evaluation, inputs.study, inputs.best
    curve_trials = _curves_trials(study, best)
    _plot_curves(curve_trials, out / "curves.png")
    _plot_confusion(ev, out / "confusion.png")
    _plot_per_class(ev, out / "per_class.png")
    _plot_history(study, out / "history.png")
    importances = _importances(study)
    if importances:
        _plot_importances(importances, out / "importance.png")
    with (out / "predictions.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "hand", "label", "predicted",
                                               "confidence", "correct"])
        writer.writeheader()
        writer.writerows(ev.predictions)
    states = {s.name.lower(): n for s in TrialState
              if (n := len(study.get_trials(deepcopy=False, states=(s,))))}
    report = {
        "study": study.study_name, "promotion": inputs.promotion, "model_file": inputs.model_file,
        "best_trial": {"number": best.number, "val_accuracy": best.value, "params": best.params,
                       "model_params": best.user_attrs.get("model_params", {}),
                       "best_epoch": best.user_attrs.get("best_epoch")},
        "test": {k: v for k, v in ev.to_dict().items() if k != "predictions"},
        "split": inputs.split_summary, "trials": states, "importances": importances,
        "curves_of_trials": [t.number for t in curve_trials],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(_markdown(report, ev, bool(importances)))
    return report


def _markdown(r: dict[str, Any], ev: Evaluation, has_importance: bool) -> str:
    promo, best = r["promotion"], r["best_trial"]
    lo, hi = ev.ci95
    lines = [f"# {r['study']}: promoted trial {best['number']}", ""]
    if not promo["clean"]:
        lines += ["> **Not a clean test.** This study's test split had already been evaluated "
                  f"({promo['previous']}); this report was forced, so its test accuracy may "
                  "have been looked at before choosing.", ""]
    lines += [
        f"**Test accuracy: {pct(ev.accuracy)}** on {ev.n} images of hands never seen in "
        f"training (95% CI {pct(lo)}–{pct(hi)}, bootstrap over {ev.ci_unit}s). "
        f"Chance: {pct(ev.chance)}; always guessing the commonest letter: {pct(ev.majority)}.",
        "",
        f"Chosen on validation accuracy only ({pct(best['val_accuracy'])}, epoch "
        f"{best['best_epoch']}); the test split was evaluated once, at {promo['time']}. "
        f"Model file: `{r['model_file']}`.", "",
        "## Per-letter accuracy", "", "![per-letter accuracy](per_class.png)", "",
        "| letter | " + " | ".join(ev.classes) + " |",
        "|---|" + "---|" * len(ev.classes),
        "| accuracy | " + " | ".join(pct(ev.per_class[c]) for c in ev.classes) + " |",
        "| images | " + " | ".join(str(ev.per_class_n[c]) for c in ev.classes) + " |", "",
        "## Confusion matrix", "", "![confusion matrix](confusion.png)", "",
        "| true \\ predicted | " + " | ".join(ev.classes) + " |",
        "|---|" + "---|" * len(ev.classes),
        *(f"| **{c}** | " + " | ".join(str(v) for v in row) + " |"
          for c, row in zip(ev.classes, ev.confusion, strict=True)), "",
        "## Winning parameters", "", "| parameter | value |", "|---|---|",
        *(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
          for k, v in {**best["model_params"], **best["params"]}.items()), "",
        "## Training curves", "",
        f"Best trial and {len(r['curves_of_trials']) - 1} others "
        f"(trials {', '.join(map(str, r['curves_of_trials']))}).", "",
        "![training curves](curves.png)", "",
        "## Optimisation", "",
        "Trials: " + ", ".join(f"{n} {s}" for s, n in r["trials"].items()) + ".", "",
        "![optimisation history](history.png)", "",
    ]
    if has_importance:
        lines += ["![parameter importance](importance.png)", ""]
    else:
        lines += [f"Parameter importance needs at least {MIN_TRIALS_FOR_IMPORTANCE} completed "
                  "trials.", ""]
    names = list(r["split"])
    letters = sorted({k for row in r["split"].values() for k in row} - {"images", "hands"})
    lines += ["## Data and split", "",
              "Hand-disjoint split (no hand and no identical photo on two sides).", "",
              "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
              *(f"| {key} | " + " | ".join(str(r["split"][n].get(key, 0)) for n in names) + " |"
                for key in ["images", "hands", *letters]), ""]
    if ev.unreadable:
        lines += ["Unreadable test images (skipped): " + ", ".join(ev.unreadable), ""]
    return "\n".join(lines)
