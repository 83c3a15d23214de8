"""The one training loop, :func:`fit`, used by the CLI, every study objective and the tests.

Inputs are whole arrays held in memory (decoded images, or cached backbone features):
at this data size that beats a DataLoader with worker processes, and it keeps every
epoch free of JPEG decoding. Per-epoch callbacks get an :class:`EpochStats`; raising
from one (e.g. ``optuna.TrialPruned``) stops training and propagates, raising
:class:`StopTraining` stops it quietly with a reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from gestures.artifact import save_model
from gestures.models import GestureModel
from gestures.preprocess import AugmentConfig, augment

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "onecycle", "constant")


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the run cannot recover."""


class StopTraining(Exception):
    """Raised by a callback to end training early, normally, with a reason."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD: Nesterov momentum
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    label_smoothing: float = 0.0
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(enabled=False))
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when present, else CPU
    threads: int | None = None  # CPU threads for this process (None: torch's default)
    max_steps: int | None = None  # stop after this many optimiser steps in total
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> ValueError:
            return ValueError(f"{name}={getattr(self, name)!r} is invalid; allowed: {allowed}")

        if self.epochs < 1:
            raise bad("epochs", "an int >= 1")
        if self.batch_size < 1:
            raise bad("batch_size", "an int >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", str(OPTIMIZERS))
        if self.schedule not in SCHEDULES:
            raise bad("schedule", str(SCHEDULES))
        if not self.lr > 0:
            raise bad("lr", "a float > 0")
        if self.weight_decay < 0:
            raise bad("weight_decay", "a float >= 0")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", "a float in [0, 1)")
        if not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", "a float in [0, 1)")
        if self.threads is not None and self.threads < 1:
            raise bad("threads", "None or an int >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Inputs:
    """What ``fit`` trains or evaluates on: decoded images or cached backbone features."""

    x: torch.Tensor  # (N, S, S, 3) uint8 images, or (N, C, H, W) features (any float dtype)
    y: torch.Tensor  # (N,) int64
    kind: Literal["images", "features"] = "images"

    def __post_init__(self) -> None:
        assert len(self.x) == len(self.y), (self.x.shape, self.y.shape)

    @classmethod
    def from_arrays(cls, x: np.ndarray, y: np.ndarray,
                    kind: Literal["images", "features"] = "images") -> Inputs:
        return cls(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(
            np.ascontiguousarray(y)).long(), kind)

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    steps: int  # optimiser steps so far
    images_per_s: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class FitResult:
    history: list[EpochStats]
    best_epoch: int
    best_val_acc: float
    best_val_loss: float
    checkpoint: Path | None
    stopped: str | None  # why training ended early, if it did

    @property
    def epochs_run(self) -> int:
        return len(self.history)


Callback = Callable[[EpochStats], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use 'auto' or 'cpu'")
    return device


class _Batches:
    """Moves batches to the device and turns images into normalised network input."""

    def __init__(self, model: GestureModel, device: torch.device, augment_cfg: AugmentConfig,
                 generator: torch.Generator) -> None:
        self.model, self.device = model, device
        self.augment_cfg, self.generator = augment_cfg, generator

    def __call__(self, inputs: Inputs, idx: torch.Tensor, train: bool) -> torch.Tensor:
        x = inputs.x[idx]
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        if inputs.kind == "features":
            return x.float()  # (B, C, H, W)
        x = x.permute(0, 3, 1, 2).float()  # (B, 3, S, S), 0..255
        if train:
            x = augment(x, self.augment_cfg, self.generator)
        x = self.model.preprocessing.normalize(x)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _forward(model: GestureModel, x: torch.Tensor, kind: str) -> torch.Tensor:
    return model.forward_head(x) if kind == "features" else model(x)


def _autocast(device: torch.device) -> torch.autocast:
    # bf16 on CUDA needs no loss scaling; CPU autocast is slower than fp32 on most CPUs.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def batched_logits(model: GestureModel, inputs: Inputs, batch_size: int = 256,
                   device: torch.device | None = None) -> torch.Tensor:
    """(N, num_classes) float32 logits on the CPU, in eval mode, in input order."""
    device = device or next(model.parameters()).device
    batches = _Batches(model, device, AugmentConfig(enabled=False), torch.Generator())
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(inputs), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(inputs)))
        with _autocast(device):
            out.append(_forward(model, batches(inputs, idx, train=False), inputs.kind)
                       .float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, model.num_classes)


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    # No weight decay on BatchNorm and biases (1-d tensors): it only fights normalisation.
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                               nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.lr)


def _make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int,
                   ) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr,
                                                   total_steps=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def fit(model: GestureModel, train: Inputs, val: Inputs | None, config: TrainConfig, *,
        callbacks: Sequence[Callback] = (), checkpoint: Path | None = None,
        classes: Sequence[str] = (), checkpoint_extra: dict[str, Any] | None = None,
        ) -> FitResult:
    """Trains ``model`` on ``train``; after every epoch evaluates ``val`` (``train`` itself
    when None), calls ``callbacks`` and saves the best epoch (by val accuracy, then loss)
    to ``checkpoint`` as a self-describing model file."""
    if len(train) == 0:
        raise ValueError("no training examples; check the split file")
    if checkpoint is not None and len(classes) != model.num_classes:
        raise ValueError(f"a checkpoint needs the {model.num_classes} class names; got "
                         f"{list(classes)}")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(config.seed)
    batches = _Batches(model, device, config.augment, generator)
    optimizer = _make_optimizer(model, config)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    schedule = _make_schedule(optimizer, config, total_steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    eval_loss_fn = nn.CrossEntropyLoss()
    val = val if val is not None else train
    history: list[EpochStats] = []
    best = (-1.0, math.inf)
    best_epoch, stopped, step = 0, None, 0
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for idx in torch.randperm(len(train), generator=generator).split(config.batch_size):
            x = batches(train, idx, train=True)
            y = train.y[idx].to(device, non_blocking=True)
            with _autocast(device):
                logits = _forward(model, x, train.kind)
                loss = loss_fn(logits.float(), y)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(
                    f"training loss became {loss.item()} at epoch {epoch}, step {step + 1} "
                    f"(lr={config.lr:g}, optimizer={config.optimizer}); lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == y).sum()
            seen += len(idx)
            if step >= total_steps:
                break
        train_seconds = time.perf_counter() - start
        val_logits = batched_logits(model, val, config.eval_batch_size, device)
        val_loss = eval_loss_fn(val_logits, val.y).item()
        val_acc = (val_logits.argmax(1) == val.y).float().mean().item()
        stats = EpochStats(epoch, loss_sum.item() / seen, correct.item() / seen, val_loss,
                           val_acc, optimizer.param_groups[0]["lr"],
                           time.perf_counter() - start, step, seen / train_seconds)
        history.append(stats)
        if (val_acc, -val_loss) > (best[0], -best[1]):
            best, best_epoch = (val_acc, val_loss), epoch
            if checkpoint is not None:
                save_model(checkpoint, model, list(classes), {
                    "epoch": epoch, "val_acc": val_acc, "val_loss": val_loss,
                    "train_config": _plain(config.to_dict()), **(checkpoint_extra or {})})
        try:
            for callback in callbacks:
                callback(stats)
        except StopTraining as exc:
            stopped = str(exc) or "stopped by a callback"
            break
        if step >= total_steps and epoch < config.epochs:
            stopped = f"reached max_steps={config.max_steps}"
            break
    return FitResult(history, best_epoch, best[0], best[1], checkpoint, stopped)


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """Tuples to lists, so the dict loads under ``torch.load(weights_only=True)``."""
    return {k: _plain(v) if isinstance(v, dict) else list(v) if isinstance(v, tuple) else v
            for k, v in d.items()}
