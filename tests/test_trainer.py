"""The stacked trainer against plain torch, one model at a time.

The reference trains every (group, config) model alone, as an nn.Linear / nn.Sequential MLP with
torch.optim.Adam or AdamW and autograd, on the batch order that ``fit`` draws (``BatchPlan``
with the same generator) and on the stacked model's initial weights. Per model, the final
weights and the per-epoch train and valid metrics must agree within float32 tolerance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pipeline.tabular.optim as optim
import pipeline.tabular.stacked as stacked
import pipeline.tabular.trainer as trainer
from pipeline.devices import make_generator
from pipeline.tabular.stacked import ACTIVATIONS, Architecture, StackedModel
from pipeline.tabular.trainer import BatchPlan, TrainParams, fit, predict_raw

MODULES = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU, "elu": nn.ELU}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The reference's many tiny autograd ops only stall on a second thread of a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def contiguous_folds(n: int, k: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """K contiguous folds as np.array_split makes them (sizes differ by one when k does not divide n)."""
    parts = [torch.from_numpy(p) for p in np.array_split(np.arange(n), k)]
    train = [torch.cat([p for j, p in enumerate(parts) if j != i]) for i in range(k)]
    return train, parts


def regression_data(n=103, d=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g)
    y = torch.exp(2 + 0.3 * X @ w + 0.1 * torch.randn(n, generator=g))  # positive "prices" around 7
    return X, y


def classification_data(n=103, d=6, classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = (X @ torch.randn(d, classes, generator=g) + 0.5 * torch.randn(n, classes, generator=g)).argmax(1)
    return X, y


def _metric(out: torch.Tensor, y: torch.Tensor, metric: str, log_target: bool) -> float:
    if metric == "accuracy":
        return (out.argmax(1) == y).float().mean().item()
    pred = out[:, 0]
    if metric == "log_rmse":
        logged = pred.clamp_min(0) if log_target else pred.clamp_min(1).log()
        return (logged - y.log()).square().mean().sqrt().item()
    price = pred.exp() if log_target else pred
    return (price - y).square().mean().sqrt().item()


def reference_net(views, g: int, c: int, config: TrainParams, n_in: int, n_out: int) -> nn.Sequential:
    """Config c of group g as an nn.Sequential, with the stacked model's weights copied in."""
    sizes = [n_in, *config.widths, n_out]
    layers = []
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(fan_in, fan_out)
        weight, bias = views[2 * layer], views[2 * layer + 1]
        w = weight[g, :fan_in, c, :fan_out] if layer == 0 else weight[g, c, :fan_in, :fan_out]
        with torch.no_grad():
            linear.weight.copy_(w.T)
            linear.bias.copy_(bias[g, c, :fan_out])
        layers.append(linear)
        if layer < len(config.widths):
            layers.append(MODULES[config.activation]())
    return nn.Sequential(*layers)


def reference_fit(X, y, train_rows, valid_rows, configs, *, metric, n_out=1, seed=0):
    """Every model trained alone with autograd and torch.optim on fit's batches and init: the
    models, (epochs, train/valid, G, C) metrics and each model's first epoch whose float32 sum
    of squared errors is not finite (cross-entropy: whose logits are not), 0 if none."""
    first = configs[0]
    G, C = len(train_rows), len(configs)
    generator = make_generator(seed, X.device)
    arch = Architecture(first.model, len(first.widths), first.activation, X.shape[1], n_out)
    init = StackedModel(arch, G, [c.widths for c in configs], [0.0] * C, X.device, generator).views()
    plan = BatchPlan(train_rows, first.batch_size, X.device)
    total = first.epochs * plan.steps
    nets, optimizers, schedulers = {}, {}, {}
    for g in range(G):
        for c, config in enumerate(configs):
            net = nets[g, c] = reference_net(init, g, c, config, X.shape[1], n_out)
            kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
            optimizers[g, c] = kind(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            factor = (lambda k: 0.5 * (1 + math.cos(math.pi * k / total))) if config.schedule == "cosine" else None
            schedulers[g, c] = torch.optim.lr_scheduler.LambdaLR(optimizers[g, c], factor or (lambda k: 1.0))
    target = torch.log(y) if first.log_target else y
    curves = np.zeros((first.epochs, 2, G, C))
    failed = np.zeros((G, C), dtype=int)
    for epoch in range(first.epochs):
        epoch_errors = torch.zeros(G, C)  # float32 sums, as on the device
        order = plan.order(generator).clone()
        for start, stop in plan.bounds:
            for g in range(G):
                rows = order[g, start:min(stop, plan.counts[g])]
                for c in range(C):
                    out = nets[g, c](X[rows])
                    loss = F.cross_entropy(out, y[rows]) if n_out > 1 else F.mse_loss(out[:, 0], target[rows])
                    # fit's failure test: squared errors, or softmax - one-hot (finite iff the logits are)
                    with torch.no_grad():
                        error = out.softmax(1) - F.one_hot(y[rows], n_out) if n_out > 1 else out[:, 0] - target[rows]
                        epoch_errors[g, c] += error.square().sum() if n_out == 1 else error.sum()
                    optimizers[g, c].zero_grad()
                    loss.backward()
                    optimizers[g, c].step()
                    schedulers[g, c].step()
        failed[(failed == 0) & ~torch.isfinite(epoch_errors).numpy()] = epoch + 1
        with torch.no_grad():
            for (g, c), net in nets.items():
                for m, rows in enumerate((train_rows[g], valid_rows[g])):
                    curves[epoch, m, g, c] = _metric(net(X[rows]), y[rows], metric, first.log_target)
    return nets, curves, failed


def assert_matches_reference(X, y, configs, *, metric, n_out=1, k=4, seed=0, rtol=1e-4):
    train, valid = contiguous_folds(len(X), k)
    result = fit(X, y, train, configs, metric=metric, valid_rows=valid, n_out=n_out, seed=seed)
    nets, curves, failed = reference_fit(X, y, train, valid, configs, metric=metric, n_out=n_out, seed=seed)
    np.testing.assert_array_equal(result.failed_epoch, failed)
    assert (failed == 0).all(), "compare diverging runs with test_failed_epoch_matches_reference"
    np.testing.assert_allclose(result.train_curve, curves[:, 0], rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(result.valid_curve, curves[:, 1], rtol=rtol, atol=1e-6)
    views = result.model.views()
    for (g, c), net in nets.items():
        stacked = reference_net(views, g, c, configs[c], X.shape[1], n_out)
        for ours, theirs in zip(stacked.parameters(), net.parameters()):
            scale = theirs.detach().abs().max().item()
            torch.testing.assert_close(ours, theirs.detach(), rtol=rtol, atol=rtol * scale)
        with torch.no_grad():
            torch.testing.assert_close(predict_raw(result.model, X)[g, :, c], net(X), rtol=rtol, atol=rtol * scale)
    assert_padding_zero(result.model)
    return result


def assert_padding_zero(model: StackedModel) -> None:
    """Units beyond a config's own width hold exactly zero weights and biases."""
    views = model.views()
    for layer in range(model.arch.depth):
        for c, widths in enumerate(model.hidden):
            h = widths[layer]
            weight_in, bias, weight_out = views[2 * layer], views[2 * layer + 1], views[2 * layer + 2]
            assert not (weight_in[:, :, c, h:] if layer == 0 else weight_in[:, c, :, h:]).any()
            assert not bias[:, c, h:].any()
            assert not weight_out[:, c, h:, :].any()


@pytest.fixture(scope="module")
def house(shared_datasets):
    from pipeline.tabular.features import build_features
    from pipeline.tabular.tables import TableSpec, load_tables

    tables = load_tables(shared_datasets / "kaggle_house_pred_train.csv",
                         shared_datasets / "kaggle_house_pred_test.csv", TableSpec("Id", "SalePrice"))
    return build_features(tables)


def test_linear_d2l_matches_reference(house):
    assert_matches_reference(house.X, house.y, [TrainParams(epochs=3)], metric="log_rmse", k=5)


def test_mlp_on_house_data_matches_reference(house):
    configs = [TrainParams(model="mlp", hidden=(h,), lr=0.5, epochs=1) for h in (32, 12)]
    assert_matches_reference(house.X, house.y, configs, metric="log_rmse", k=5)


@pytest.mark.parametrize("optimizer,schedule", [("adam", "constant"), ("adamw", "cosine")])
def test_mlp_grid_with_unequal_folds_matches_reference(optimizer, schedule):
    X, y = regression_data()
    configs = [TrainParams(model="mlp", hidden=(h,), lr=lr, weight_decay=wd, epochs=4, batch_size=16,
                           optimizer=optimizer, schedule=schedule)
               for lr in (0.01, 0.05) for wd in (0.0, 0.1) for h in (8, 5)]
    assert_matches_reference(X, y, configs, metric="log_rmse")


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_shared_lr_and_decay_use_the_fused_kernel_and_match_reference(optimizer, monkeypatch):
    """Configs sharing lr and weight decay (a CV of one config) step with torch's fused kernel."""
    monkeypatch.setattr(optim, "_Adam", None)  # the per-element path would fail
    X, y = regression_data()
    configs = [TrainParams(model="mlp", hidden=(h,), lr=0.03, weight_decay=0.1, epochs=4, batch_size=16,
                           optimizer=optimizer, schedule="cosine") for h in (8, 5)]
    assert_matches_reference(X, y, configs, metric="log_rmse")


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_two_hidden_layers_match_reference(activation):
    X, y = regression_data(n=60, seed=2)
    configs = [TrainParams(model="mlp", hidden=h, activation=activation, lr=0.02, epochs=3, batch_size=16)
               for h in ((6, 4), (3, 5))]
    assert_matches_reference(X, y, configs, metric="rmse", k=3)


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_log_target_matches_reference(model):
    X, y = regression_data(seed=3)
    configs = [TrainParams(model=model, hidden=(6,), lr=lr, epochs=4, batch_size=16, log_target=True)
               for lr in (0.01, 0.1)]
    assert_matches_reference(X, y, configs, metric="log_rmse")
    assert_matches_reference(X, y, configs, metric="rmse")


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_classification_matches_reference(model):
    X, y = classification_data()
    configs = [TrainParams(model=model, hidden=(h,), lr=0.05, weight_decay=wd, epochs=4, batch_size=16)
               for h in (7, 4) for wd in (0.0, 0.01)]
    assert_matches_reference(X, y, configs, metric="accuracy", n_out=3)


def test_failed_epoch_matches_reference():
    """lr 1e18 on these data overflows the loss in the first or the second epoch,
    depending on the fold; the stacked run flags the same epochs as torch."""
    X, y = regression_data()
    train, valid = contiguous_folds(len(X), 4)
    configs = [TrainParams(lr=lr, epochs=4, batch_size=16) for lr in (0.1, 1e18)]
    result = fit(X, y, train, configs, metric="log_rmse", valid_rows=valid)
    _, curves, failed = reference_fit(X, y, train, valid, configs, metric="log_rmse")
    assert (failed[:, 0] == 0).all() and len(set(failed[:, 1])) > 1
    np.testing.assert_array_equal(result.failed_epoch, failed)
    np.testing.assert_allclose(result.valid_curve[:, :, 0], curves[:, 1, :, 0], rtol=1e-4)


def test_split_blocks_match_one_block(monkeypatch):
    """Wide sweeps are computed in blocks of groups or of one group's configs; results do not change."""
    X, y = regression_data()
    train, valid = contiguous_folds(len(X), 4)
    configs = [TrainParams(model="mlp", hidden=(h,), lr=lr, epochs=2, batch_size=16, dropout=0.2)
               for lr in (0.01, 0.03) for h in (8, 5, 3)]
    whole = fit(X, y, train, configs, metric="log_rmse", valid_rows=valid)
    for budget in (16 * 8 * 6, 16 * 8 * 2):  # two groups' models at once, then two configs of one group
        monkeypatch.setattr(stacked, "ACTIVATION_BUDGET", budget)
        monkeypatch.setattr(trainer, "ACTIVATION_BUDGET", budget)
        blocks = whole.model.blocks(16)
        assert len(blocks) > 1 and sum(b.weights[0].shape[0] * (b.configs.stop - b.configs.start) for b in blocks) == 24
        split = fit(X, y, train, configs, metric="log_rmse", valid_rows=valid)
        np.testing.assert_allclose(split.valid_curve, whole.valid_curve, rtol=1e-5)
        torch.testing.assert_close(split.model.theta, whole.model.theta, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_hand_written_backward_matches_autograd_with_dropout(activation):
    g = torch.Generator().manual_seed(4)
    arch = Architecture("mlp", 2, activation, 5, 2)
    model = StackedModel(arch, 3, [(6, 4), (3, 4), (6, 2)], [0.5, 0.0, 0.3], torch.device("cpu"), g)
    model.theta.normal_(generator=g)  # padding too: its gradients must still be exactly what autograd says
    x = F.pad(torch.randn(3, 9, 5, generator=g), (0, 1), value=1.0)  # with the ones column that carries the bias
    dout = torch.randn(3, 3, 2, 9, generator=g)
    theta = model.theta.clone().requires_grad_(True)
    [block] = model.blocks(9, theta)
    out, saved = model.forward_block(block, x.transpose(1, 2), make_generator(7, x.device))
    (out * dout).sum().backward()
    grad = torch.zeros_like(theta)
    with torch.no_grad():
        [grads] = model.blocks(9, grad)
        model.backward_block(block, grads, x, saved, dout)
    assert any(keep is not None and (keep == 0).any() for _, _, keep, _ in saved)
    torch.testing.assert_close(grad, theta.grad, rtol=1e-5, atol=1e-5)


def test_dropout_trains_and_evaluates_differently():
    X, y = regression_data()
    train, valid = contiguous_folds(len(X), 4)
    configs = [TrainParams(model="mlp", hidden=(16,), lr=0.01, dropout=p, epochs=3, batch_size=16) for p in (0.0, 0.5)]
    first = fit(X, y, train, configs, metric="log_rmse", valid_rows=valid, seed=5)
    again = fit(X, y, train, configs, metric="log_rmse", valid_rows=valid, seed=5)
    np.testing.assert_array_equal(first.valid_curve, again.valid_curve)
    assert torch.equal(first.model.theta, again.model.theta)
    model = first.model
    x = X[:20].unsqueeze(0)
    train_mode = model.forward(x, generator=make_generator(0, X.device))
    eval_mode = model.forward(x)
    torch.testing.assert_close(train_mode[:, :, 0], eval_mode[:, :, 0])  # p = 0: the same either way
    assert not torch.allclose(train_mode[:, :, 1], eval_mode[:, :, 1])
    torch.testing.assert_close(eval_mode, predict_raw(model, X[:20]))


def test_same_seed_same_result_and_different_seed_differs():
    X, y = regression_data()
    train, valid = contiguous_folds(len(X), 4)
    configs = [TrainParams(model="mlp", hidden=(8,), lr=0.02, epochs=2, batch_size=16)]
    a, b = (fit(X, y, train, configs, metric="log_rmse", valid_rows=valid, seed=11) for _ in range(2))
    c = fit(X, y, train, configs, metric="log_rmse", valid_rows=valid, seed=12)
    assert torch.equal(a.model.theta, b.model.theta)
    np.testing.assert_array_equal(a.train_curve, b.train_curve)
    assert not torch.allclose(a.model.theta, c.model.theta)
    assert not np.allclose(a.valid_curve, c.valid_curve)


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_divergence_fails_only_the_diverged_models(house, model):
    X, y = house.X, house.y
    train, valid = contiguous_folds(len(X), 5)
    base = TrainParams(model=model, hidden=(8,), epochs=4)
    sane = [base.with_(lr=lr) for lr in (0.5, 5.0)]
    # The diverging config replaces a sane one with the same shape: the initial weights and batch
    # orders of the other configs are then the same in both runs.
    bad = fit(X, y, train, sane + [base.with_(lr=1e30)], metric="log_rmse", valid_rows=valid)
    good = fit(X, y, train, sane + [base.with_(lr=1.0)], metric="log_rmse", valid_rows=valid)
    assert (bad.failed_epoch[:, 2] > 0).all() and (bad.failed_epoch[:, :2] == 0).all()
    assert (good.failed_epoch == 0).all()
    assert np.isnan(bad.final_valid[:, 2]).all()
    for g, epoch in enumerate(bad.failed_epoch[:, 2]):
        assert np.isfinite(bad.valid_curve[:epoch - 1, g, 2]).all()
        assert np.isnan(bad.valid_curve[epoch - 1:, g, 2]).all()
    np.testing.assert_array_equal(bad.valid_curve[:, :, :2], good.valid_curve[:, :, :2])
    np.testing.assert_array_equal(bad.train_curve[:, :, :2], good.train_curve[:, :, :2])


def test_checkpoint_round_trip_keeps_predictions():
    X, y = classification_data()
    train, valid = contiguous_folds(len(X), 3)
    configs = [TrainParams(model="mlp", hidden=(h,), epochs=1, batch_size=16) for h in (4, 6)]
    result = fit(X, y, train, configs, metric="accuracy", valid_rows=valid, n_out=3)
    state = result.model.state({"note": 1})
    loaded = StackedModel.from_state(state, torch.device("cpu"))
    torch.testing.assert_close(predict_raw(loaded, X), predict_raw(result.model, X))
    with pytest.raises(ValueError):
        StackedModel.from_state({**state, "format": "pipeline.stacked/1"}, torch.device("cpu"))
