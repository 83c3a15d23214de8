from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from gestures.models import create_model
from gestures.split import SplitConfig, split_dataset
from hpo import service
from hpo.storage import fail_orphaned_trials, open_storage
from hpo.studyfile import StudyFileError, load_study_file, parse_study

ROOT = Path(__file__).resolve().parents[1]


def _study_toml(data_root: Path, split: Path, name: str, n_trials: int = 4,
                extra: str = "") -> str:
    return f"""
name = "{name}"
model = "simple_cnn"
data = "{data_root}"
split = "{split}"
seed = 0
{extra}
[fixed]
image_size = 64
epochs = 3
optimizer = "sgd"
augment = false

[search]
conv_dilation = {{ type = "int", low = 1, high = 2 }}
lr = {{ type = "float", low = 1e-2, high = 0.2, log = true }}
weight_decay = {{ type = "float", low = 1e-5, high = 1e-2, log = true }}
batch_size = {{ type = "categorical", choices = [32, 64] }}

[sampler]
type = "tpe"
seed = 0
multivariate = true
constant_liar = true
n_startup_trials = 2

[pruner]
type = "median"
n_startup_trials = 0
n_warmup_steps = 0

[budget]
n_trials = {n_trials}

[workers]
heartbeat_interval = 1
grace_period = 3
max_retry = 2
threads = 1
"""


@pytest.fixture(scope="module")
def small_split(tmp_path_factory, clean_data) -> Path:
    """A hand-disjoint split over 16 hands, so a trial takes seconds."""
    from gestures.sanity import few_hands

    subset = few_hands(clean_data, 16 * 25)
    split, _ = split_dataset(subset, SplitConfig(val=0.25, test=0.2, seed=0))
    path = tmp_path_factory.mktemp("split") / "split.csv"
    split.save(path)
    return path


def _write_study(tmp_path: Path, data_root: Path, split: Path, name: str, **kw) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(_study_toml(data_root, split, name, **kw))
    return path


def _worker(study: str, url: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "hpo", "worker", study, "--storage", url,
                             *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _trials(name: str, url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials()


# --- study-file validation -------------------------------------------------------------


@pytest.mark.parametrize(("patch", "message"), [
    (("[fixed]", "[fixed]\nfoo = 1"), r"fixed\.foo: not a parameter .* valid: .*conv_dilation"),
    (("seed = 0\n", "seed = 0\ncolour = 'red'\n"), r"colour: unknown key"),
    (("n_trials = 4", "n_trials = 'four'"), r"budget\.n_trials: expected an integer"),
    (("low = 1e-2, high = 0.2", "low = 0.2, high = 1e-2"), r"search\.lr: low .* > high"),
    (("low = 1e-5, high = 1e-2, log = true", "low = 0.0, high = 1e-2, log = true"),
     r"search\.weight_decay\.low: a log range must be > 0"),
    (("type = \"median\"", "type = \"asha\""), r"pruner\.type: 'asha'"),
    (("multivariate = true", "multivariate = 1"), r"sampler\.multivariate: expected true"),
    (("image_size = 64", "image_size = 20"), r"fixed: image_size=20 is invalid"),
])
def test_study_file_errors_name_the_key(tmp_path, data_root, small_split, patch, message):
    text = _study_toml(data_root, small_split, "bad").replace(*patch)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(StudyFileError, match=message):
        load_study_file(path)


def test_missing_data_set_is_a_clear_error(tmp_path, data_root, small_split):
    text = _study_toml(tmp_path / "nowhere", small_split, "bad")
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(StudyFileError, match=r"data: data set .*nowhere does not exist"):
        load_study_file(tmp_path / "bad.toml")


def test_shipped_studies_are_valid():
    paths = sorted((ROOT / "studies").glob("*.toml"))
    assert {p.stem for p in paths} == {"simple_cnn", "transfer_cnn", "finetune"}
    for path in paths:
        spec = load_study_file(path)
        assert spec.sampler.seed == 0 and spec.n_trials >= 1
        names = {d.name for d in spec.search}
        assert {"lr", "weight_decay", "batch_size"} <= names
        gpu = load_study_file(path, profile="gpu")
        assert gpu.fixed["image_size"] == 224 and gpu.n_trials > spec.n_trials
        assert gpu.search == spec.search


def test_reference_studies_are_valid_and_build():
    paths = sorted((ROOT / "studies" / "reference").glob("*.toml"))
    assert paths
    for path in paths:
        spec = load_study_file(path)
        assert Path(spec.data).is_dir() and spec.n_trials >= 1
        model_params, train_params = spec.split_params(spec.fixed)
        create_model(spec.model, num_classes=9, **model_params)
        service.train_config(spec, train_params, threads=None)


def test_unknown_profile_and_gpu_keys(tmp_path, data_root, small_split):
    path = _write_study(tmp_path, data_root, small_split, "p")
    with pytest.raises(StudyFileError, match="profile 'tpu'"):
        load_study_file(path, profile="tpu")
    path.write_text(path.read_text() + "\n[gpu]\nsearch = {}\n")
    with pytest.raises(StudyFileError, match=r"gpu\.search: unknown key"):
        load_study_file(path)


def test_parse_requires_name_model_data():
    with pytest.raises(StudyFileError, match="name: missing"):
        parse_study({"model": "simple_cnn", "data": "."})


# --- running studies ---------------------------------------------------------------------


def test_two_workers_share_sqlite(tmp_path, data_root, small_split):
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    spec = load_study_file(_write_study(tmp_path, data_root, small_split, "two", n_trials=4))
    service.create_study(spec, url)
    workers = [_worker("two", url) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    assert not any("database is locked" in o for o in outputs)
    trials = _trials("two", url)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= 4
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    hosts = {t.user_attrs.get("host") for t in finished}
    assert hosts and all(t.user_attrs.get("curves_artifact") for t in finished)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete and all(t.user_attrs.get("checkpoint_artifact") for t in complete)
    status = service.study_status("two", url)
    assert status.best_value == max(t.value for t in complete)


def test_sigkilled_worker_trial_is_retried(tmp_path, data_root, small_split):
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    spec = load_study_file(_write_study(tmp_path, data_root, small_split, "kill", n_trials=3))
    service.create_study(spec, url)
    victim = _worker("kill", url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        trials = _trials("kill", url)
        if any(t.state == TrialState.RUNNING for t in trials):
            break
        time.sleep(0.2)
    else:
        victim.kill()
        pytest.fail("the first worker never started a trial")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    done_before = {t.number: t.value for t in _trials("kill", url)
                   if t.state == TrialState.COMPLETE}
    time.sleep(spec.workers.grace_period + 1)  # let its heartbeat go stale
    rescuer = _worker("kill", url)
    out = rescuer.communicate(timeout=300)[0]
    assert rescuer.returncode == 0, out
    trials = _trials("kill", url)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert retried and retried[0].params == failed[0].params
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= 3
    for number, value in done_before.items():  # completed trials are intact
        assert trials[number].value == value


def test_trial_orphaned_before_its_first_heartbeat_is_failed_and_retried(
        tmp_path, data_root, small_split):
    # A worker killed between creating a trial and writing its first heartbeat (CI hit
    # this window) leaves a RUNNING trial that Optuna's stale check never fails.
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    spec = load_study_file(_write_study(tmp_path, data_root, small_split, "orphan"))
    service.create_study(spec, url)
    study, _ = service.load_study("orphan", url)
    w = spec.workers
    storage = open_storage(url, w.heartbeat_interval, w.grace_period, w.max_retry)
    study_id = storage.get_study_id_from_name("orphan")
    orphan = storage.get_trial(storage.create_new_trial(study_id)).number
    alive = storage.create_new_trial(study_id)
    storage.record_heartbeat(alive)
    assert fail_orphaned_trials(study, storage) == []  # younger than the grace period
    time.sleep(w.grace_period + 1)
    assert fail_orphaned_trials(study, storage) == [orphan]
    assert fail_orphaned_trials(study, storage) == []
    trials = _trials("orphan", url)
    assert trials[orphan].state == TrialState.FAIL
    # a trial with a heartbeat is Optuna's to judge, not ours
    assert storage.get_trial(alive).state == TrialState.RUNNING
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == orphan]
    assert [t.state for t in retry] == [TrialState.WAITING]


@pytest.mark.filterwarnings("ignore:Fixed parameter lr:UserWarning")  # deliberately absurd
def test_absurd_learning_rate_is_pruned(tmp_path, data_root, small_split):
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    spec = load_study_file(_write_study(tmp_path, data_root, small_split, "prune",
                                        n_trials=2))
    study = service.create_study(spec, url)
    study.enqueue_trial({"conv_dilation": 1, "lr": 0.05, "weight_decay": 1e-4,
                         "batch_size": 32})
    study.enqueue_trial({"conv_dilation": 1, "lr": 1e3, "weight_decay": 1e-4,
                         "batch_size": 32})
    service.run_worker("prune", url)
    trials = _trials("prune", url)
    assert trials[0].state == TrialState.COMPLETE
    assert trials[1].state == TrialState.PRUNED, trials[1].user_attrs
    assert trials[1].user_attrs.get("pruned_reason")


# --- PostgreSQL and the dashboard (servers started by bin/services) -----------------------


def test_two_workers_share_postgresql(tmp_path, data_root, small_split, monkeypatch):
    url = os.environ.get("HPO_TEST_POSTGRES")
    assert url, "HPO_TEST_POSTGRES is unset: run the suite with bin/test, which starts PostgreSQL"
    monkeypatch.setenv("HPO_ARTIFACTS", str(tmp_path / "artifacts"))
    name = f"pg-{os.getpid()}-{int(time.time())}"
    spec = load_study_file(_write_study(tmp_path, data_root, small_split, name, n_trials=3))
    service.create_study(spec, url)
    try:
        workers = [_worker(name, url) for _ in range(2)]
        outputs = [w.communicate(timeout=300)[0] for w in workers]
        assert all(w.returncode == 0 for w in workers), outputs
        trials = _trials(name, url)
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(finished) >= 3
        assert not [t for t in trials if t.state == TrialState.RUNNING]
        assert list((tmp_path / "artifacts").rglob("*"))  # checkpoints landed in the store
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(url))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_shows_study_and_trials(tmp_path, data_root, small_split):
    from playwright.sync_api import sync_playwright

    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    spec = load_study_file(_write_study(tmp_path, data_root, small_split, "dash-study",
                                        n_trials=2))
    study = service.create_study(spec, url)
    for lr in (0.05, 0.02):  # two sane trials, so both complete and importances exist
        study.enqueue_trial({"conv_dilation": 1, "lr": lr, "weight_decay": 1e-4,
                             "batch_size": 32})
    service.run_worker("dash-study", url)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "hpo", "dashboard", "--storage", url,
                               "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--headless", "--no-sandbox", "--disable-gpu",
                      "--disable-background-networking"])
            page = browser.new_page()
            deadline = time.monotonic() + 60
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}/dashboard/",
                              wait_until="domcontentloaded")
                    break
                except Exception:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise
                    time.sleep(0.5)
            page.get_by_text("dash-study").first.wait_for(timeout=30_000)
            # The study page plots the trials' history and their parameters' importance,
            # which exists only once trials have finished and been read from the storage.
            page.goto(f"http://127.0.0.1:{port}/dashboard/studies/1",
                      wait_until="domcontentloaded")
            page.get_by_text("batch_size", exact=True).first.wait_for(timeout=30_000)
            text = page.inner_text("body")
            browser.close()
        assert "dash-study" in text and "Hyperparameter Importance" in text, text[:2000]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_same_seed_same_trial(tmp_path, data_root, small_split):
    """Same study file, same seed: the trial is reproduced exactly, initial weights included."""
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    values = []
    for name in ("again-1", "again-2"):
        spec = load_study_file(_write_study(tmp_path, data_root, small_split, name, n_trials=1))
        service.create_study(spec, url)
        service.run_worker(name, url)
        (trial,) = _trials(name, url)
        curve = [(h["train_loss"], h["val_acc"]) for h in trial.user_attrs["history"]]
        values.append((trial.params, curve))
    assert values[0] == values[1]
