"""Rich renderings of library results; the CLI prints these and nothing else computes here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.study import StudySummary
from rich.console import Console
from rich.table import Table

from gestures.checks import CheckReport
from gestures.evaluate import Prediction
from gestures.train import EpochStats
from hpo.promote import test_summary
from hpo.report import pct
from hpo.service import SPEC_ATTR, StudyStatus

console = Console()
err_console = Console(stderr=True)


def check_report(report: CheckReport) -> None:
    table = Table(title=f"{report.n_images} images")
    table.add_column("letter")
    table.add_column("images", justify="right")
    for label, n in report.per_class.items():
        table.add_row(label, str(n))
    console.print(table)
    sizes = sorted(report.per_hand.values())
    if sizes:
        console.print(f"{len(report.per_hand)} hands, {sizes[0]}–{sizes[-1]} images each "
                      f"(median {sizes[len(sizes) // 2]})")
    if report.exif_rotated_hands:
        hands = ", ".join(f"{h} ({n})" for h, n in report.exif_rotated_hands.items())
        console.print(f"EXIF-rotated hands (applied when decoding): {hands}")
    findings = Table(title="findings", show_lines=True)
    findings.add_column("severity")
    findings.add_column("kind")
    findings.add_column("files", justify="right")
    findings.add_column("detail", overflow="fold")
    for f in report.findings:
        severity = "[red]ERROR[/red]" if f.error else "[yellow]note[/yellow]"
        detail = f.detail if len(f.paths) <= 3 else f"{f.detail} (e.g. {', '.join(f.paths[:3])})"
        findings.add_row(severity, f.kind, str(len(f.paths)), detail)
    console.print(findings if report.findings else "[green]no findings[/green]")


def split_summary(summary: Mapping[str, Mapping[str, int]]) -> None:
    names = list(summary)
    letters = sorted({k for row in summary.values() for k in row} - {"images", "hands"})
    table = Table(title="hand-disjoint split")
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")
    for key in ["images", "hands", *letters]:
        table.add_row(key, *(str(summary[n].get(key, 0)) for n in names))
    console.print(table)


def overfit_curve(history: list[EpochStats], every: int = 10) -> None:
    table = Table(title="memorisation curve")
    for col in ("step", "train loss", "train accuracy"):
        table.add_column(col, justify="right")
    for stats in history:
        if stats.steps % every == 0 or stats is history[-1] or stats.steps == 1:
            table.add_row(str(stats.steps), f"{stats.train_loss:.4f}", f"{stats.val_acc:.1%}")
    console.print(table)


def study_list(summaries: list[StudySummary]) -> None:
    table = Table(title="studies")
    for col in ("study", "model", "trials", "best val accuracy"):
        table.add_column(col)
    for s in summaries:
        spec = s.user_attrs.get(SPEC_ATTR, {})
        best = pct(s.best_trial.value if s.best_trial else None)
        table.add_row(s.study_name, spec.get("model", "?"), str(s.n_trials), best)
    console.print(table)


def study_status(st: StudyStatus) -> None:
    table = Table(title=f"study {st.name} ({st.model}), budget {st.budget} trials")
    table.add_column("")
    table.add_column("")
    for state, n in st.by_state.items():
        table.add_row(f"trials {state.lower()}", str(n))
    table.add_row("pruned fraction", f"{st.pruned_fraction:.0%}")
    table.add_row("time spent in trials", f"{st.seconds / 60:.1f} min")
    if st.promotion:
        p = st.promotion
        table.add_row("test accuracy", f"{p['test_accuracy']:.1%} (trial {p['trial']}, "
                      f"{p['time']}{'' if p['clean'] else ', NOT clean'})")
    if st.best_value is not None:
        table.add_row("best val accuracy", f"{st.best_value:.1%} (trial {st.best_trial})")
        for k, v in st.best_params.items():
            table.add_row(f"  {k}", f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(table)


def test_result(r: Mapping[str, Any]) -> None:
    lo, hi = r["ci95"]
    console.print(f"accuracy [bold]{pct(r['accuracy'])}[/bold] on {r['n']} images "
                  f"(95% CI {pct(lo)}–{pct(hi)} over {r['ci_unit']}s; chance "
                  f"{pct(r['chance'])})")
    table = Table(title="per letter")
    table.add_column("true \\ predicted")
    for c in r["classes"]:
        table.add_column(c, justify="right")
    table.add_column("accuracy", justify="right")
    for c, row in zip(r["classes"], r["confusion"], strict=True):
        table.add_row(c, *(str(v) if v else "." for v in row), pct(r["per_class"][c]))
    console.print(table)
    _skipped(r["unreadable"])


def predictions(preds: list[Prediction], unreadable: Mapping[str, str]) -> None:
    table = Table(title="predictions")
    table.add_column("image")
    table.add_column("top letters")
    for p in preds:
        table.add_row(p.path, "  ".join(f"{c} {q:.1%}" for c, q in p.top))
    console.print(table)
    _skipped(unreadable)


def _skipped(unreadable: Mapping[str, str]) -> None:
    for path, why in unreadable.items():
        err_console.print(f"[yellow]skipped unreadable[/yellow] {path}: {why}")


def comparison(statuses: list[StudyStatus]) -> None:
    table = Table(title="studies compared")
    for col in ("study", "model", "best val", "test (95% CI)", "trials", "minutes"):
        table.add_column(col)
    for s in statuses:
        table.add_row(s.name, s.model, pct(s.best_value), test_summary(s.promotion),
                      s.trials_text, f"{s.seconds / 60:.1f}")
    console.print(table)
