"""Throughput: trials per hour with 1 worker (2 threads) and 2 workers (1 thread each)
on one machine, same study and budget, no pruning (every trial does the same work).

Run: .venv/bin/python bench/bench_workers.py [N_TRIALS]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpo.service import FINISHED, create_study
from hpo.studyfile import load_study_file

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "simple_cnn.toml"


def main() -> None:
    n_trials = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    base = load_study_file(STUDY)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        for workers, threads in ((1, 2), (2, 1)):
            name = f"workers-{workers}"
            spec = load_study_file(STUDY, overrides={
                "name": name, "budget": {"n_trials": n_trials}, "pruner": {"type": "none"},
                "fixed": {**base.fixed, "epochs": 2}})
            study = create_study(spec, url)
            t = time.perf_counter()
            procs = [subprocess.Popen([sys.executable, "-m", "hpo", "worker", name, "--storage",
                                       url, "--threads", str(threads)], cwd=ROOT,
                                      stdout=subprocess.DEVNULL, env=dict(os.environ))
                     for _ in range(workers)]
            codes = [p.wait() for p in procs]
            seconds = time.perf_counter() - t
            # Workers may overshoot the budget by the trials already running when it is
            # reached, so count what actually finished.
            done = len(study.get_trials(deepcopy=False, states=FINISHED))
            print(f"{workers} worker(s) x {threads} thread(s): {done} trials in "
                  f"{seconds:.0f} s = {done / seconds * 3600:.0f} trials/hour "
                  f"(exit codes {codes})")


if __name__ == "__main__":
    main()
