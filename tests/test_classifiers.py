"""Classifier factories, the device-resident training loop, evaluation, and report plots."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from pipeline.images.models import MODELS, Head, ResNet, build_classifier
from pipeline.images.train import DEFAULTS, TrainingParams, class_scores, classifier_params, evaluate, \
    fit_classifier, predict
from pipeline.errors import ParamError, TrainingError, UsageError
from pipeline.images.data import CLASS_NAMES, read_idx
from pipeline.plots import confusion_matrix_png, learning_curves_png, prediction_grid_png

CPU = torch.device("cpu")


def _synthetic(n: int = 300, seed: int = 0):
    """Noise images whose brightness is the class, which survives crops and flips: easy to learn."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    noise = torch.randint(0, 30, (n, 28, 28), dtype=torch.uint8, generator=g)
    x = noise + (y * 22).to(torch.uint8)[:, None, None]
    return x, y


@pytest.fixture(scope="module")
def real(shared_datasets):
    """5000 training and 2000 held-out test images of the real set, read straight from the mirror."""
    folder = shared_datasets / "fashion-mnist"
    kinds = ("images-idx3", "labels-idx1")
    train_x, train_y = (read_idx(folder / f"train-{kind}-ubyte.gz")[:5000] for kind in kinds)
    test_x, test_y = (read_idx(folder / f"t10k-{kind}-ubyte.gz")[:2000] for kind in kinds)
    return train_x, train_y, test_x, test_y


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_map_images_to_ten_logits(name):
    model = build_classifier(name)
    assert model(torch.zeros(5, 28, 28, dtype=torch.uint8)).shape == (5, 10)
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    assert {"epochs", "batch_size", "optimizer", "lr", "weight_decay", "augment"} <= set(DEFAULTS[name])


def test_resnet_builds_its_own_backbone_without_torchvision(monkeypatch):
    for name in ("torchvision", "torchvision.models", "torchvision.models.resnet"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ImportError, even if imported before
    model = build_classifier("resnet", blocks=[1, 1, 1, 1])
    assert isinstance(model[1], ResNet) and isinstance(model[1].fc, Head)
    assert model[1].conv1.stride == (1, 1) and isinstance(model[1].maxpool, torch.nn.Identity)


def test_cnn_stages_take_one_width_or_a_list_of_widths():
    model = build_classifier("cnn", channels=[4, [8, 8], [16, 16, 16]])
    convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 4), (4, 8), (8, 8), (8, 16), (16, 16), (16, 16)]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model) == 2  # between stages only
    assert model(torch.zeros(2, 28, 28, dtype=torch.uint8)).shape == (2, 10)


def test_head_is_nn_linear_in_value_and_gradient():
    torch.manual_seed(0)
    head, x = Head(784, 10), torch.rand(37, 784)
    reference = torch.nn.Linear(784, 10)
    reference.load_state_dict(head.state_dict())  # same parameter names and shapes
    out, expected = head(x), reference(x)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(head.weight.grad, reference.weight.grad)
    torch.testing.assert_close(head.bias.grad, reference.bias.grad)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_class_scores_match_cross_entropy_and_argmax(smoothing):
    torch.manual_seed(0)
    y = torch.randint(0, 10, (50,))
    for logits in (torch.randn(50, 10), torch.randn(10, 50).t()):  # contiguous, and a Head's layout
        loss, hits = class_scores(logits, y, smoothing)
        torch.testing.assert_close(loss, F.cross_entropy(logits, y, label_smoothing=smoothing))
        assert hits.item() == (logits.argmax(1) == y).sum().item()


def test_unknown_names_are_usage_errors():
    with pytest.raises(UsageError, match="not one of softmax, mlp, lenet, cnn, resnet"):
        build_classifier("vit")
    with pytest.raises(UsageError, match="no parameter depth"):
        build_classifier("mlp", depth=3)
    x, y = _synthetic(20)
    with pytest.raises(UsageError, match="optimizer = 'rmsprop': not one of sgd, adam, adamw"):
        fit_classifier("mlp", {"optimizer": "rmsprop"}, x, y, device=CPU)
    with pytest.raises(UsageError, match="compile = 'cuda-graphs': not one of false, true, default, reduce-overhead"):
        fit_classifier("mlp", {"compile": "cuda-graphs"}, x, y, device=CPU)


def test_each_classifier_declares_its_own_params():
    """DEFAULTS is every classifier's training params then its architecture's, and its
    architecture's defaults are what build_classifier builds."""
    for name, arch in MODELS.items():
        resolved = classifier_params(name)
        assert resolved.architecture == arch.defaults and isinstance(resolved.training, TrainingParams)
        assert list(DEFAULTS[name]) == [*TrainingParams.__dataclass_fields__, *arch.defaults]
    assert {name: set(arch.defaults) for name, arch in MODELS.items()} == {
        "softmax": set(), "mlp": {"hidden", "dropout"}, "lenet": set(), "cnn": {"channels"}, "resnet": {"blocks"}}
    convs = [m for m in build_classifier("cnn") if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 64, 128, 128]  # DEFAULTS["cnn"]["channels"]
    resolved = classifier_params("cnn", {"channels": [4, 8], "epochs": 2.0, "lr": 1})
    assert resolved.architecture == {"channels": [4, 8]}
    assert (resolved.training.epochs, resolved.training.lr, resolved.training.batch_size) == (2, 1.0, 256)
    assert type(resolved.training.epochs) is int and type(resolved.training.lr) is float


def test_an_unknown_param_names_itself_and_the_known_ones():
    with pytest.raises(UsageError, match="classifier 'cnn' has no parameter hidden; valid: .*batch_size.*channels"):
        classifier_params("cnn", {"hidden": 64})
    with pytest.raises(ParamError, match="model = 'vit': not one of softmax, mlp, lenet, cnn, resnet"):
        classifier_params("vit")


@pytest.mark.parametrize("param, value, why", [
    ("epochs", 0, "at least 1"), ("epochs", "ten", "a whole number"), ("batch_size", 0, "at least 1"),
    ("optimizer", "rmsprop", "not one of sgd, adam, adamw"), ("lr", 0, "positive"), ("lr", float("nan"), "positive"),
    ("momentum", -0.1, "at least 0"), ("weight_decay", -1e-4, "at least 0"),
    ("schedule", "step", "not one of none, cosine, onecycle"), ("augment", "yes", "true or false"),
    ("crop_pad", -1, "at least 0"), ("label_smoothing", 1.5, r"in \[0, 1\]"), ("amp", "no", "true or false"),
])
def test_a_bad_training_param_is_a_param_error(param, value, why):
    with pytest.raises(ParamError, match=why) as caught:
        classifier_params("mlp", {param: value})
    assert caught.value.param == param and str(caught.value).startswith(f"{param} = ")


@pytest.mark.parametrize("name, params, param", [
    ("mlp", {"hidden": 0}, "hidden"), ("mlp", {"hidden": [256, 128]}, "hidden"), ("mlp", {"dropout": 1.0}, "dropout"),
    ("cnn", {"channels": []}, "channels"), ("cnn", {"channels": [4, [8, 0]]}, "channels"),
    ("resnet", {"blocks": [2, 2, 2]}, "blocks"),
])
def test_a_bad_architecture_param_is_a_param_error(name, params, param):
    with pytest.raises(ParamError) as caught:
        build_classifier(name, **params)
    assert caught.value.param == param and caught.value.value == params[param]


@pytest.mark.parametrize("name", ["softmax", "mlp"])
def test_short_real_run_beats_chance(real, name):
    train_x, train_y, test_x, test_y = real
    model, history = fit_classifier(name, {"epochs": 2}, train_x, train_y, test_x, test_y, device=CPU, seed=0)
    assert [row["epoch"] for row in history] == [1, 2]
    result = evaluate(model, test_x, test_y, CPU)
    assert result["accuracy"] > 0.6
    assert result["accuracy"] == pytest.approx(history[-1]["valid_accuracy"], abs=1e-6)
    assert sum(map(sum, result["confusion"])) == 2000 and len(result["per_class"]) == 10


def test_convnet_training_is_deterministic_and_learns():
    x, y = _synthetic()
    params = {"epochs": 2, "batch_size": 64, "channels": [8, 16], "lr": 0.01}
    first, history = fit_classifier("cnn", params, x, y, x, y, device=CPU, seed=3)
    second, _ = fit_classifier("cnn", params, x, y, device=CPU, seed=3)
    other, _ = fit_classifier("cnn", params, x, y, device=CPU, seed=4)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert any(not torch.equal(v, other.state_dict()[k]) for k, v in first.state_dict().items())
    row = history[-1]
    assert set(row) == {"epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "seconds"}
    assert row["train_loss"] < history[0]["train_loss"] and row["valid_accuracy"] > 0.3
    assert predict(first, x[:7], CPU).shape == (7, 10)


@pytest.mark.parametrize("name, params", [("lenet", {}), ("cnn", {"channels": [4, 8]}),
                                          ("resnet", {"blocks": [1, 1, 1, 1]})])
def test_convnet_trains_on_an_odd_subset(name, params):
    """129 = 2 * 64 + 1 images: the lone last one is skipped (a batch of one would break
    BatchNorm), so the epoch's accuracy counts exactly 128 samples, and the model did learn."""
    x, y = _synthetic(129)
    model, history = fit_classifier(name, {"epochs": 2, "batch_size": 64, **params}, x, y, device=CPU, seed=1)
    assert [row["epoch"] for row in history] == [1, 2]
    hits = [row["train_accuracy"] * 128 for row in history]
    # k / 129 is a multiple of 1 / 128 only for k = 0 or 129, so one epoch in (0, 128) settles it
    assert all(h == round(h) for h in hits) and any(0 < h < 128 for h in hits), hits
    for row in history:
        assert row["valid_loss"] is None and row["valid_accuracy"] is None
        assert math.isfinite(row["train_loss"]) and row["train_loss"] > 0
    with torch.random.fork_rng():
        torch.manual_seed(1)  # fit_classifier initialises the weights from its seed like this
        initial = build_classifier(name, **params).state_dict()
    trained = model.state_dict()
    assert initial.keys() == trained.keys()
    weights = [k for k, v in initial.items() if v.is_floating_point() and k.endswith("weight")]
    assert weights and all(not torch.allclose(initial[k], trained[k]) for k in weights)
    # the control: with a negligible learning rate the weights stay at that initialisation
    still, _ = fit_classifier(name, {"epochs": 1, "batch_size": 64, "lr": 1e-12, **params}, x, y, device=CPU, seed=1)
    assert all(torch.allclose(initial[k], still.state_dict()[k]) for k in weights)


@pytest.mark.parametrize("name", ["softmax", "mlp"])
def test_divergence_is_a_training_error(name):
    x, y = _synthetic(200)
    params = {"epochs": 3, "lr": float("inf"), "optimizer": "sgd", "batch_size": 20}
    with pytest.raises(TrainingError, match=r"non-finite.*epoch 1; lower lr \(now inf\)"):
        fit_classifier(name, params, x, y, device=CPU)


def test_plots_write_png_files(tmp_path):
    x, y = _synthetic(18)
    pred = y.roll(1)
    confusion = torch.bincount(y * 10 + pred, minlength=100).reshape(10, 10).tolist()
    paths = [
        confusion_matrix_png(confusion, CLASS_NAMES, tmp_path / "confusion.png"),
        prediction_grid_png(x, y, pred, CLASS_NAMES, tmp_path / "grid.png"),
        learning_curves_png(
            [{"label": "fold 1", "train": [1.0, 0.5, 0.3], "valid": [1.1, 0.7, 0.6]},
             {"label": "fold 2", "train": [0.9, 0.4, 0.2], "valid": None}],
            tmp_path / "curves.png", ylabel="log rmse", title="curves",
        ),
    ]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 2000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png", "curves.png", "grid.png"]
