from __future__ import annotations

import pytest
import torch

from gestures.artifact import ArtifactError, load_model
from gestures.features import build_inputs
from gestures.models import create_model
from gestures.preprocess import AugmentConfig, augment
from gestures.train import Inputs, NonFiniteLoss, TrainConfig, batched_logits, fit


@pytest.fixture(scope="module")
def tiny(small_data):
    model = create_model("simple_cnn", image_size=64, num_classes=len(small_data.classes))
    paths = small_data.paths()
    inputs = build_inputs(model, small_data, {"train": paths[::2], "val": paths[1::2]})
    return small_data, inputs


def _fit(small_data, inputs, checkpoint=None, **kw):
    torch.manual_seed(0)
    model = create_model("simple_cnn", image_size=64, num_classes=len(small_data.classes))
    config = TrainConfig(epochs=3, batch_size=8, lr=0.01, seed=0, **kw)
    result = fit(model, inputs["train"], inputs["val"], config, checkpoint=checkpoint,
                 classes=small_data.classes)
    return model, result


def test_checkpoint_round_trip(tiny, tmp_path):
    small_data, inputs = tiny
    path = tmp_path / "best.pt"
    _, result = _fit(small_data, inputs, checkpoint=path, augment=AugmentConfig())
    saved = load_model(path)
    assert saved.classes == list(small_data.classes)
    assert saved.preprocessing.image_size == 64
    assert saved.extra["epoch"] == result.best_epoch
    logits = batched_logits(saved.model, inputs["val"])
    acc = (logits.argmax(1) == inputs["val"].y).float().mean().item()
    assert acc == pytest.approx(result.best_val_acc)
    # A second load predicts identically: nothing random at inference.
    assert torch.equal(batched_logits(load_model(path).model, inputs["val"]), logits)
    # weights_only: a pickle that would run code is refused.
    evil = tmp_path / "evil.pt"
    torch.save({"format": object()}, evil)
    with pytest.raises(ArtifactError):
        load_model(evil)


def test_seeded_runs_are_identical(tiny):
    small_data, inputs = tiny
    _, a = _fit(small_data, inputs, augment=AugmentConfig())
    _, b = _fit(small_data, inputs, augment=AugmentConfig())
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]


def test_nan_guard_fires(tiny):
    _, inputs = tiny
    bad = Inputs(inputs["train"].x.clone(), inputs["train"].y, "images")
    model = create_model("simple_cnn", image_size=64)
    with torch.no_grad():
        model.fc5.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLoss, match="lower the learning rate"):
        fit(model, bad, None, TrainConfig(epochs=1, batch_size=8))


def test_callback_exception_propagates(tiny):
    _, inputs = tiny

    class Pruned(Exception):
        pass

    def prune(stats):
        raise Pruned(stats.epoch)

    model = create_model("simple_cnn", image_size=64)
    with pytest.raises(Pruned):
        fit(model, inputs["train"], inputs["val"], TrainConfig(epochs=3), callbacks=[prune])


def test_augment_identity_and_flip_is_opt_in():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32) * 255
    same = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), color_jitter=0.0)
    assert torch.allclose(augment(x, same, g), x, atol=1e-3)
    flip = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), color_jitter=0.0,
                         hflip=True)
    out = augment(x, flip, torch.Generator().manual_seed(0))
    flipped = [torch.allclose(o, i.flip(-1), atol=1e-3) for o, i in zip(out, x, strict=True)]
    assert any(flipped) and not all(flipped)
    assert not AugmentConfig().hflip


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="optimizer='adam'"):
        TrainConfig(optimizer="adam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lr=0"):
        TrainConfig(lr=0)
