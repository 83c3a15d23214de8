"""Study files (TOML): what to tune, how, and for how long; validated before anything runs.

Every parameter, fixed (``[fixed]``) or searched (``[search]``), is either a model
parameter of the chosen family or a training parameter (:class:`TrainConfig`); names are
checked against both, so a typo is an error that lists the valid names.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from gestures.models import ModelConfigError, list_models, model_config, model_params
from gestures.train import TrainConfig

# Training parameters a study may set; "augment" switches the augmentation preset,
# "hflip" adds horizontal flips (off by default: a mirrored hand is the other hand).
TRAIN_KEYS = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "momentum",
              "schedule", "label_smoothing", "augment", "hflip")
TOP_KEYS = {"name", "model", "data", "groups", "split", "seed", "fixed", "search", "sampler",
            "pruner", "budget", "storage", "workers", "description", "gpu"}
# [gpu]: a bigger budget used when a GPU is present (or asked for): its [gpu.fixed] and
# [gpu.budget] tables replace the same keys of [fixed] and [budget].
GPU_KEYS = {"fixed", "budget"}
DISTRIBUTION_KEYS = {"int": {"type", "low", "high", "log", "step"},
                     "float": {"type", "low", "high", "log", "step"},
                     "categorical": {"type", "choices"}}
SAMPLER_KEYS = {"type", "seed", "multivariate", "constant_liar", "n_startup_trials"}
PRUNER_KEYS = {"median": {"type", "n_startup_trials", "n_warmup_steps"},
               "hyperband": {"type", "min_resource", "reduction_factor"},
               "none": {"type"}}
BUDGET_KEYS = {"n_trials", "timeout"}
WORKER_KEYS = {"heartbeat_interval", "grace_period", "max_retry", "threads"}


class StudyFileError(ValueError):
    """A study file is invalid; the message names the key and the fix."""


def _fail(key: str, message: str) -> StudyFileError:
    return StudyFileError(f"{key}: {message}")


def _check_keys(section: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise _fail(f"{where}.{unknown[0]}" if where else unknown[0],
                    f"unknown key; valid keys here: {sorted(allowed)}")


def _typed(value: Any, kinds: type | tuple[type, ...], key: str, what: str) -> Any:
    # bool is an int in Python; a TOML `true` where a number is expected is a mistake.
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise _fail(key, f"expected {what}, got {value!r}")
    if not isinstance(value, kinds):
        raise _fail(key, f"expected {what}, got {type(value).__name__} {value!r}")
    return value


@dataclass(frozen=True)
class Distribution:
    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high),  # type: ignore[arg-type]
                                     step=int(self.step or 1), log=self.log)
        if self.type == "float":
            return trial.suggest_float(self.name, float(self.low), float(self.high),  # type: ignore[arg-type]
                                       step=self.step, log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))


def _distribution(name: str, raw: Any) -> Distribution:
    key = f"search.{name}"
    _typed(raw, dict, key, "a table like { type = \"float\", low = 1e-4, high = 1e-1, log = true }")
    kind = raw.get("type")
    if kind not in DISTRIBUTION_KEYS:
        raise _fail(f"{key}.type", f"{kind!r} is not a distribution; use one of "
                    f"{sorted(DISTRIBUTION_KEYS)}")
    _check_keys(raw, DISTRIBUTION_KEYS[kind], key)
    if kind == "categorical":
        choices = _typed(raw.get("choices"), list, f"{key}.choices", "a non-empty list")
        if not choices:
            raise _fail(f"{key}.choices", "must not be empty")
        return Distribution(name, kind, choices=tuple(choices))
    number = int if kind == "int" else (int, float)
    what = "an integer" if kind == "int" else "a number"
    for bound in ("low", "high"):
        if bound not in raw:
            raise _fail(f"{key}.{bound}", f"missing; a {kind} range needs low and high")
        _typed(raw[bound], number, f"{key}.{bound}", what)
    low, high, log = raw["low"], raw["high"], raw.get("log", False)
    _typed(log, bool, f"{key}.log", "true or false")
    if low > high:
        raise _fail(key, f"low ({low}) > high ({high}); swap them")
    if log and low <= 0:
        raise _fail(f"{key}.low", f"a log range must be > 0 (got low = {low}); use a small "
                    "positive low such as 1e-6, or log = false")
    step = raw.get("step")
    if step is not None:
        _typed(step, number, f"{key}.step", what)
        if log:
            raise _fail(f"{key}.step", "step and log = true cannot be combined")
    return Distribution(name, kind, low, high, log, step)


@dataclass(frozen=True)
class SamplerSpec:
    type: str = "tpe"
    seed: int = 0
    # Optuna 5 turned both on by default; a study file says what it wants explicitly.
    multivariate: bool = True
    constant_liar: bool = True
    n_startup_trials: int = 5

    def build(self) -> optuna.samplers.BaseSampler:
        if self.type == "random":
            return optuna.samplers.RandomSampler(seed=self.seed)
        return optuna.samplers.TPESampler(seed=self.seed, multivariate=self.multivariate,
                                          constant_liar=self.constant_liar,
                                          n_startup_trials=self.n_startup_trials)


@dataclass(frozen=True)
class PrunerSpec:
    type: str = "median"
    n_startup_trials: int = 2
    n_warmup_steps: int = 1
    min_resource: int = 1
    reduction_factor: int = 3

    def build(self, max_epochs: int) -> optuna.pruners.BasePruner:
        if self.type == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=self.n_startup_trials,
                                               n_warmup_steps=self.n_warmup_steps)
        if self.type == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=self.min_resource,
                                                  max_resource=max_epochs,
                                                  reduction_factor=self.reduction_factor)
        return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class WorkerSpec:
    heartbeat_interval: int = 10  # seconds between a running trial's heartbeats
    grace_period: int = 30  # a RUNNING trial silent this long belongs to a dead worker
    max_retry: int = 2  # times a dead worker's trial is re-queued
    threads: int | None = None  # CPU threads per worker (None: torch's default, every core)


@dataclass(frozen=True)
class StudySpec:
    name: str
    model: str
    data: str
    groups: str | None = None
    split: str | None = None  # a split file; None: made from data with `seed`
    seed: int = 0
    fixed: dict[str, Any] = field(default_factory=dict)
    search: tuple[Distribution, ...] = ()
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    n_trials: int = 10
    timeout: float | None = None
    storage: str | None = None
    workers: WorkerSpec = WorkerSpec()
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudySpec:
        d = dict(d)
        d["search"] = tuple(Distribution(**{**x, "choices": tuple(x["choices"])})
                            for x in d["search"])
        d["sampler"] = SamplerSpec(**d["sampler"])
        d["pruner"] = PrunerSpec(**d["pruner"])
        d["workers"] = WorkerSpec(**d["workers"])
        return cls(**d)

    @property
    def max_epochs(self) -> int:
        dist = next((d for d in self.search if d.name == "epochs"), None)
        if dist is not None:
            return int(max(dist.choices) if dist.type == "categorical" else dist.high)  # type: ignore[arg-type]
        return int(self.fixed.get("epochs", TrainConfig().epochs))

    def split_params(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(model params, training params) from one flat dict of fixed + sampled values."""
        model_keys = set(model_params(self.model))
        return ({k: v for k, v in params.items() if k in model_keys},
                {k: v for k, v in params.items() if k not in model_keys})


def _section(raw: dict[str, Any], name: str, allowed: set[str] | None) -> dict[str, Any]:
    section = _typed(raw.get(name, {}), dict, name, "a table")
    if allowed is not None:
        _check_keys(section, allowed, name)
    return section


def _resolve(base: Path, path: str) -> Path:
    """A study file's paths are relative to the file."""
    p = Path(path)
    return p if p.is_absolute() else (base / p).resolve()


def parse_study(raw: dict[str, Any], base: Path = Path(".")) -> StudySpec:
    """Validates a parsed study file; relative paths are resolved against ``base``."""
    _check_keys(raw, TOP_KEYS, "")
    for key in ("name", "model", "data"):
        if key not in raw:
            raise _fail(key, "missing; every study file needs name, model and data")
        _typed(raw[key], str, key, "a string")
    if raw["model"] not in list_models():
        raise _fail("model", f"unknown model {raw['model']!r}; use one of {list_models()}")
    data = _resolve(base, raw["data"])
    if not data.is_dir():
        raise _fail("data", f"data set {data} does not exist; point it at the folder with one "
                    "sub-folder per letter (relative paths are relative to the study file)")
    paths: dict[str, str | None] = {}
    for key in ("groups", "split"):
        value = raw.get(key)
        if value is not None:
            p = _resolve(base, _typed(value, str, key, "a path"))
            if not p.is_file():
                raise _fail(key, f"file {p} does not exist")
            paths[key] = str(p)
    model_keys = set(model_params(raw["model"]))
    valid = sorted(model_keys | set(TRAIN_KEYS))
    fixed = _section(raw, "fixed", None)
    search_raw = _section(raw, "search", None)
    for where, names in (("fixed", fixed), ("search", search_raw)):
        for name in names:
            if name not in valid:
                raise _fail(f"{where}.{name}", f"not a parameter of {raw['model']!r} or of "
                            f"training; valid: {valid}")
    both = sorted(set(fixed) & set(search_raw))
    if both:
        raise _fail(f"search.{both[0]}", "is also in [fixed]; keep it in one of the two")
    search = tuple(_distribution(name, value) for name, value in search_raw.items())
    _validate_fixed(raw["model"], fixed)

    sampler = _section(raw, "sampler", SAMPLER_KEYS)
    if sampler.get("type", "tpe") not in ("tpe", "random"):
        raise _fail("sampler.type", f"{sampler['type']!r}; use 'tpe' or 'random'")
    pruner = _section(raw, "pruner", None)
    ptype = pruner.get("type", "median")
    if ptype not in PRUNER_KEYS:
        raise _fail("pruner.type", f"{ptype!r}; use one of {sorted(PRUNER_KEYS)}")
    _check_keys(pruner, PRUNER_KEYS[ptype], "pruner")
    budget = _section(raw, "budget", BUDGET_KEYS)
    n_trials = _typed(budget.get("n_trials", 10), int, "budget.n_trials", "an integer")
    if n_trials < 1:
        raise _fail("budget.n_trials", f"{n_trials}; must be >= 1")
    timeout = budget.get("timeout")
    if timeout is not None and _typed(timeout, (int, float), "budget.timeout", "seconds") <= 0:
        raise _fail("budget.timeout", f"{timeout}; must be > 0 seconds")
    workers = _section(raw, "workers", WORKER_KEYS)
    for key, kinds, what in (("sampler.seed", int, "an integer"),
                             ("sampler.n_startup_trials", int, "an integer"),
                             ("sampler.multivariate", bool, "true or false"),
                             ("sampler.constant_liar", bool, "true or false")):
        name = key.split(".")[1]
        if name in sampler:
            _typed(sampler[name], kinds, key, what)
    for name in set(pruner) - {"type"}:
        _typed(pruner[name], int, f"pruner.{name}", "an integer")
    for name, value in workers.items():
        _typed(value, int, f"workers.{name}", "an integer")
    storage = raw.get("storage")
    if storage is not None:
        _typed(storage, str, "storage", "a database URL such as sqlite:///studies/hpo.db")
    return StudySpec(
        name=raw["name"], model=raw["model"], data=str(data), groups=paths.get("groups"),
        split=paths.get("split"), seed=_typed(raw.get("seed", 0), int, "seed", "an integer"),
        fixed=fixed, search=search, sampler=SamplerSpec(**sampler),
        pruner=PrunerSpec(**pruner), n_trials=n_trials,
        timeout=timeout, storage=storage, workers=WorkerSpec(**workers),
        description=str(raw.get("description", "")))


def _validate_fixed(model: str, fixed: dict[str, Any]) -> None:
    """Fixed values go through the same config dataclasses as trials do."""
    model_keys = set(model_params(model))
    try:
        model_config(model, **{k: v for k, v in fixed.items() if k in model_keys})
    except (ModelConfigError, TypeError) as exc:
        raise _fail("fixed", str(exc)) from exc
    train = {k: v for k, v in fixed.items() if k in TRAIN_KEYS and k not in ("augment", "hflip")}
    try:
        TrainConfig(**train)
    except (ValueError, TypeError) as exc:
        raise _fail("fixed", str(exc)) from exc
    for flag in ("augment", "hflip"):
        if flag in fixed:
            _typed(fixed[flag], bool, f"fixed.{flag}", "true or false")


def apply_profile(raw: dict[str, Any], profile: str) -> dict[str, Any]:
    """The study file as run under ``profile`` ("cpu": as written; "gpu": with [gpu])."""
    if profile not in ("cpu", "gpu"):
        raise StudyFileError(f"profile {profile!r} is unknown; use 'cpu' or 'gpu'")
    gpu = _section(raw, "gpu", GPU_KEYS)
    raw = {k: v for k, v in raw.items() if k != "gpu"}
    if profile == "gpu":
        for key in GPU_KEYS:
            raw[key] = {**_section(raw, key, None), **_section(gpu, key, None)}
    return raw


def load_study_file(path: Path, profile: str = "cpu",
                    overrides: dict[str, Any] | None = None) -> StudySpec:
    """Reads and validates a study file; ``overrides`` replace top-level keys (e.g. the data
    folder or split file of one run) before validation, so they are checked too."""
    path = Path(path)
    if not path.is_file():
        raise StudyFileError(f"study file {path} does not exist; see studies/ for examples")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise StudyFileError(f"{path} is not valid TOML: {exc}") from exc
    try:
        return parse_study({**apply_profile(raw, profile), **(overrides or {})},
                           base=path.parent)
    except StudyFileError as exc:
        raise StudyFileError(f"{path}: {exc}") from exc
