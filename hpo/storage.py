"""Where studies live: an Optuna RDB storage (SQLite for one machine, PostgreSQL for many)
plus a file-system artifact store for trial checkpoints and curves.

SQLite is opened in WAL mode with a 60 s busy timeout: readers never block the writer
and concurrent writers wait instead of failing with "database is locked". Heartbeats
let any worker fail (and re-queue) the RUNNING trial of a worker that died.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb import models as rdb_models  # no public heartbeat query; tested
from optuna.trial import TrialState
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

STORAGE_ENV = "HPO_STORAGE"
ARTIFACTS_ENV = "HPO_ARTIFACTS"
DEFAULT_STORAGE = "sqlite:///studies/hpo.db"


class StorageError(ValueError):
    """A storage URL is unusable; the message says why and what to pass."""


def resolve_url(url: str | None, fallback: str | None = None) -> str:
    """--storage, else $HPO_STORAGE, else the study file's, else studies/hpo.db."""
    return url or os.environ.get(STORAGE_ENV) or fallback or DEFAULT_STORAGE


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" and \
        parsed.database else None


def artifact_dir(url: str, override: str | None = None) -> Path:
    """Artifacts sit beside a SQLite file; for a server, $HPO_ARTIFACTS (a shared folder)."""
    chosen = override or os.environ.get(ARTIFACTS_ENV)
    if chosen:
        return Path(chosen)
    db = _sqlite_path(url)
    if db is None:
        raise StorageError(f"storage {url} is a server: set {ARTIFACTS_ENV} (or --artifacts) to "
                           "a folder every worker can read and write, e.g. an NFS mount")
    return db.parent / f"{db.stem}-artifacts"


def open_storage(url: str, heartbeat_interval: int = 10, grace_period: int = 30,
                 max_retry: int = 2) -> RDBStorage:
    try:
        backend = make_url(url).get_backend_name()
    except Exception as exc:
        raise StorageError(f"storage URL {url!r} is not a database URL; use "
                           "sqlite:///PATH or postgresql+psycopg://USER@HOST/DB") from exc
    engine_kwargs: dict = {}
    db = _sqlite_path(url)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(db, timeout=60) as conn:
            conn.execute("PRAGMA journal_mode=WAL")  # persistent in the file
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif backend == "postgresql":
        engine_kwargs = {"pool_pre_ping": True}
    try:
        return RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry))
    except Exception as exc:
        raise StorageError(f"cannot open storage {url}: {type(exc).__name__}: {exc}") from exc


def fail_orphaned_trials(study: optuna.Study, storage: RDBStorage) -> list[int]:
    """Fails, and re-queues through the storage's retry callback, every RUNNING trial of
    ``study`` that never recorded a heartbeat and started more than a grace period ago.
    Returns their numbers.

    Optuna's own stale-trial check skips a trial with no heartbeat at all, since an ask/tell
    trial may run without one. Here every trial runs in a worker with heartbeats, whose first
    one is written just after the trial is created; a worker killed in between (CI saw it)
    would otherwise leave the trial RUNNING for ever.
    """
    grace = storage.grace_period or 2 * (storage.heartbeat_interval or 0)
    if not grace:
        return []
    study_id = storage.get_study_id_from_name(study.study_name)
    trial = rdb_models.TrialModel
    with Session(storage.engine) as session:
        silent = session.scalars(select(trial.trial_id).where(
            trial.study_id == study_id, trial.state == TrialState.RUNNING,
            ~trial.heartbeats.any())).all()
    # FrozenTrial.datetime_start is naive local time, like datetime.now().
    cutoff = datetime.now() - timedelta(seconds=grace)
    failed = []
    for trial_id in silent:
        started = storage.get_trial(trial_id).datetime_start
        if started is None or started > cutoff:
            continue
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # another worker got there first
            continue
        frozen = storage.get_trial(trial_id)
        log.warning("trial %d: its worker died before its first heartbeat; failed it and "
                    "queued a retry", frozen.number)
        callback = storage.get_heartbeat_stale_trial_callback()
        if callback is not None:
            callback(study, frozen)
        failed.append(frozen.number)
    return failed


def artifact_store(url: str, override: str | None = None) -> FileSystemArtifactStore:
    path = artifact_dir(url, override)
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def quiet_optuna() -> None:
    """Heartbeats and the retry callback are 'experimental' in Optuna 5; we rely on them on
    purpose, so their warnings are noise for a worker's log."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
