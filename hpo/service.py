"""The HPO service: create studies from study files, run tuning workers, summarise.

A study's validated spec is stored in the study itself (user attribute ``spec``), so a
worker on any machine needs only the study name and the storage URL.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import upload_artifact
from optuna.storages import RDBStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from gestures.data import DataSet, GroupSource, discover
from gestures.features import build_inputs
from gestures.models import create_model
from gestures.preprocess import AugmentConfig
from gestures.split import Split, SplitConfig, load_split, split_dataset
from gestures.train import EpochStats, NonFiniteLoss, TrainConfig, fit, resolve_device
from hpo.storage import (
    artifact_store,
    fail_orphaned_trials,
    open_storage,
    quiet_optuna,
    resolve_url,
)
from hpo.studyfile import StudySpec

SPEC_ATTR = "spec"
PROMOTIONS_ATTR = "promotions"  # list of test evaluations, written by hpo.promote
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class StudyError(ValueError):
    """A study is missing or clashes with an existing one; the message says what to do."""


def create_study(spec: StudySpec, storage_url: str | None = None) -> optuna.Study:
    """Creates the study (or returns it if it exists with the same spec)."""
    quiet_optuna()
    url = resolve_url(storage_url, spec.storage)
    storage = open_storage(url)
    study = optuna.create_study(study_name=spec.name, storage=storage, direction="maximize",
                                sampler=spec.sampler.build(),
                                pruner=spec.pruner.build(spec.max_epochs), load_if_exists=True)
    stored = study.user_attrs.get(SPEC_ATTR)
    new = json.loads(json.dumps(spec.to_dict()))
    if stored is not None and stored != new:
        raise StudyError(f"study {spec.name!r} already exists in {url} with a different "
                            "study file; rename the study or delete it first")
    study.set_user_attr(SPEC_ATTR, new)
    study.set_user_attr("objective", "validation accuracy of the best epoch (maximise)")
    return study


def list_studies(storage_url: str | None = None) -> list[optuna.study.StudySummary]:
    quiet_optuna()
    return optuna.get_all_study_summaries(open_storage(resolve_url(storage_url)))


def load_study(name: str, storage_url: str | None = None) -> tuple[optuna.Study, StudySpec]:
    """The study and its spec, with the sampler, pruner and heartbeats the spec asks for."""
    study, spec, _ = _open_study(name, storage_url)
    return study, spec


def _open_study(name: str, storage_url: str | None
                ) -> tuple[optuna.Study, StudySpec, RDBStorage]:
    quiet_optuna()
    url = resolve_url(storage_url)
    probe = open_storage(url)
    names = optuna.get_all_study_names(probe)
    if name not in names:
        raise StudyError(f"no study {name!r} in {url}; studies there: {names or 'none'}. "
                         "Create it with 'hpo study create FILE' (same --storage)")
    attrs = probe.get_study_user_attrs(probe.get_study_id_from_name(name))
    spec = StudySpec.from_dict(attrs[SPEC_ATTR])
    # Heartbeats are a property of the storage object, so reopen it with the spec's.
    w = spec.workers
    storage = open_storage(url, w.heartbeat_interval, w.grace_period, w.max_retry)
    study = optuna.load_study(study_name=name, storage=storage, sampler=spec.sampler.build(),
                              pruner=spec.pruner.build(spec.max_epochs))
    return study, spec, storage


def study_data(spec: StudySpec) -> DataSet:
    """The study's data set, with hand ids from its groups CSV (default DATA/hands.csv)."""
    return discover(Path(spec.data), GroupSource(csv=Path(spec.groups) if spec.groups else None))


def study_split(spec: StudySpec, data: DataSet) -> Split:
    """The split file if the spec names one, else the deterministic split of the data."""
    if spec.split:
        return load_split(Path(spec.split))
    return split_dataset(data, SplitConfig(seed=spec.seed), exclude_problems=True)[0]


def train_config(spec: StudySpec, params: dict[str, Any], threads: int | None) -> TrainConfig:
    p = dict(params)
    augment = AugmentConfig(enabled=bool(p.pop("augment", True)), hflip=bool(p.pop("hflip",
                                                                                    False)))
    return TrainConfig(**p, augment=augment, seed=spec.seed, threads=threads)


@dataclass
class Objective:
    """Trains one trial with the one loop; reports each epoch's val accuracy for pruning."""

    spec: StudySpec
    storage_url: str
    threads: int | None = None

    def __post_init__(self) -> None:
        data = study_data(self.spec)
        self.split = study_split(self.spec, data)
        self.train_paths, self.val_paths = self.split.train_val()
        # The test split is never decoded, let alone read, by a trial.
        self.data = data.subset(self.train_paths + self.val_paths)
        self.store = artifact_store(self.storage_url)

    def __call__(self, trial: optuna.Trial) -> float:
        sampled = {d.name: d.suggest(trial) for d in self.spec.search}
        model_params, train_params = self.spec.split_params({**self.spec.fixed, **sampled})
        config = train_config(self.spec, train_params, self.threads)
        # Seed the weight initialisation too, not only fit(): otherwise a trial's fresh head
        # depends on whatever drew random numbers earlier in this process.
        torch.manual_seed(config.seed)
        model = create_model(self.spec.model, num_classes=len(self.data.classes), **model_params)
        inputs = build_inputs(model, self.data, {"train": self.train_paths,
                                                 "val": self.val_paths})
        trial.set_user_attr("model_params", model_params)
        trial.set_user_attr("train_config", json.loads(json.dumps(config.to_dict())))
        trial.set_user_attr("host", platform.node())
        trial.set_user_attr("device", str(resolve_device(config.device)))
        trial.set_user_attr("torch", torch.__version__)
        history: list[dict[str, float]] = []

        def report(stats: EpochStats) -> None:
            history.append(stats.to_dict())
            trial.set_user_attr("history", history)
            trial.report(stats.val_acc, stats.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {stats.epoch}: val accuracy "
                                         f"{stats.val_acc:.3f} below the pruner's bar")

        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = Path(tmp) / "model.pt"
            try:
                result = fit(model, inputs["train"], inputs["val"], config, callbacks=[report],
                             checkpoint=checkpoint, classes=self.data.classes,
                             checkpoint_extra={"trial": trial.number, "study": self.spec.name})
            except NonFiniteLoss as exc:
                trial.set_user_attr("pruned_reason", str(exc))
                raise optuna.TrialPruned(str(exc)) from exc
            except optuna.TrialPruned as exc:
                trial.set_user_attr("pruned_reason", str(exc))
                raise
            finally:
                trial.set_user_attr("seconds", time.perf_counter() - start)
                self._upload(trial, checkpoint, history)
        trial.set_user_attr("best_epoch", result.best_epoch)
        return result.best_val_acc

    def _upload(self, trial: optuna.Trial, checkpoint: Path, history: list[dict]) -> None:
        curves = checkpoint.with_name("curves.json")
        curves.write_text(json.dumps(history, indent=1))
        trial.set_user_attr("curves_artifact", upload_artifact(
            artifact_store=self.store, file_path=str(curves), study_or_trial=trial,
            mimetype="application/json"))
        if checkpoint.exists():
            trial.set_user_attr("checkpoint_artifact", upload_artifact(
                artifact_store=self.store, file_path=str(checkpoint), study_or_trial=trial,
                mimetype="application/octet-stream"))


def run_worker(name: str, storage_url: str | None = None, n_trials: int | None = None,
               timeout: float | None = None, threads: int | None = None) -> int:
    """Runs trials until the study's total budget (complete + pruned) is reached, the
    worker's own ``n_trials``/``timeout`` run out, or the study's timeout passes.
    Returns the number of trials this worker finished."""
    url = resolve_url(storage_url)
    study, spec, storage = _open_study(name, url)
    objective = Objective(spec, url, threads or spec.workers.threads)
    fail_orphaned_trials(study, storage)
    done_before = _finished(study)
    if done_before >= spec.n_trials:
        return 0
    # Optuna fails stale trials before each trial; orphans are swept after each one.
    study.optimize(objective, n_trials=n_trials, timeout=timeout or spec.timeout,
                   callbacks=[MaxTrialsCallback(spec.n_trials, states=FINISHED),
                              lambda study, _: fail_orphaned_trials(study, storage)],
                   gc_after_trial=True)
    return _finished(study) - done_before


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


@dataclass
class StudyStatus:
    name: str
    model: str
    budget: int
    by_state: dict[str, int]
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    pruned_fraction: float
    seconds: float
    promotion: dict[str, Any] | None  # the latest test evaluation, if promoted

    @property
    def trials_text(self) -> str:
        """'5 complete, 2 pruned'."""
        return ", ".join(f"{n} {state.lower()}" for state, n in self.by_state.items())


def study_status(name: str, storage_url: str | None = None) -> StudyStatus:
    study, spec = load_study(name, storage_url)
    trials = study.get_trials(deepcopy=False)
    by_state = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    finished = by_state["COMPLETE"] + by_state["PRUNED"]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value or 0.0) if complete else None
    seconds = sum(float(t.user_attrs.get("seconds", 0.0)) for t in trials)
    return StudyStatus(name, spec.model, spec.n_trials, {k: v for k, v in by_state.items() if v},
                       best.value if best else None, best.params if best else {},
                       best.number if best else None,
                       by_state["PRUNED"] / finished if finished else 0.0, seconds,
                       (study.user_attrs.get(PROMOTIONS_ATTR) or [None])[-1])
