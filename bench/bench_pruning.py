"""Pruning: epochs spent until the best validation accuracy is reached, with and without
the pruner, same sampler seed, on the shipped transfer_cnn study (cheap epochs).

Run: .venv/bin/python bench/bench_pruning.py [N_TRIALS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hpo.service import create_study, run_worker
from hpo.studyfile import load_study_file

STUDY = Path(__file__).resolve().parents[1] / "studies" / "transfer_cnn.toml"


def epochs_to_best(study: optuna.Study) -> tuple[int, int, float]:
    """(epochs spent up to the first trial reaching the final best, all epochs, best)."""
    trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                             TrialState.PRUNED)),
                    key=lambda t: t.number)
    best = max(t.value for t in trials if t.state == TrialState.COMPLETE)
    spent, until_best = 0, None
    for t in trials:
        spent += len(t.user_attrs.get("history", []))
        if until_best is None and t.state == TrialState.COMPLETE and t.value == best:
            until_best = spent
    return until_best or spent, spent, best


def main() -> None:
    n_trials = int(sys.argv[1]) if len(sys.argv) > 1 else 24
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        for label, pruner in (("hyperband pruner", None), ("no pruner", {"type": "none"})):
            overrides = {"name": label.replace(" ", "-"), "budget": {"n_trials": n_trials}}
            if pruner:
                overrides["pruner"] = pruner
            spec = load_study_file(STUDY, overrides=overrides)
            study = create_study(spec, url)
            t = time.perf_counter()
            run_worker(spec.name, url)
            seconds = time.perf_counter() - t
            until, total, best = epochs_to_best(study)
            pruned = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
            print(f"{label}: best val {best:.1%} reached after {until} epochs; {total} epochs "
                  f"in all ({pruned}/{n_trials} pruned), {seconds:.0f} s")


if __name__ == "__main__":
    main()
