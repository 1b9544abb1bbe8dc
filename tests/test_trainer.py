"""The stacked trainer against plain torch, one model at a time.

The reference trains every (group, config) model alone, as an nn.Linear / nn.Sequential MLP with
torch.optim.Adam or AdamW and autograd, on the batch order that ``fit`` draws (``BatchPlan``
with the same generator) and on the stacked model's initial weights. Per model, the final
weights and the per-epoch train and valid metrics must agree within float32 tolerance. The
reference knows the MLP's options of issue 14 too: standardized targets, label smoothing, the
onecycle schedule and submodels (a config's adjacent columns, scored by their mean).
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
from pipeline.tabular.trainer import BatchPlan, TrainParams, fit, predict_raw, predictions

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


def _mean_metric(outs: list[torch.Tensor], y: torch.Tensor, metric: str, log_target: bool, standard) -> float:
    """The metric of a config's submodels' mean prediction: class probabilities averaged, or
    values destandardized (``standard``: shift, scale and the training targets' range, which
    clips them), back from log space and averaged where the metric compares them (log(max(p, 1))
    for log_rmse)."""
    if len(outs) == 1 and standard is None:
        return _metric(outs[0], y, metric, log_target)
    if metric == "accuracy":
        return (torch.stack([o.softmax(1) for o in outs]).mean(0).argmax(1) == y).float().mean().item()
    values = []
    for out in outs:
        pred = out[:, 0]
        if standard is not None:
            shift, scale, low, high = standard
            pred = (pred * scale + shift).clamp(low, high)
        values.append(pred.exp() if log_target else pred)
    if metric == "log_rmse":
        return (torch.stack(values).clamp_min(1).log().mean(0) - y.log()).square().mean().sqrt().item()
    return (torch.stack(values).mean(0) - y).square().mean().sqrt().item()


def lr_factor(schedule: str, total: int):
    """LambdaLR's factor before optimizer step k + 1 of ``total``: cosine from 1 to 0, or
    onecycle's linear warm-up over the first 5% of the steps, then a cosine to 0."""
    if schedule == "cosine":
        return lambda k: 0.5 * (1 + math.cos(math.pi * k / total))
    if schedule == "onecycle":
        warm = max(1, round(0.05 * total))
        return lambda k: (k + 1) / warm if k < warm else 0.5 * (1 + math.cos(math.pi * (k + 1 - warm) / (total - warm)))
    return lambda k: 1.0


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
    of squared errors is not finite (cross-entropy: whose logits are not), 0 if none.

    A config's ``submodels`` are its adjacent columns of the stack (models keyed (g, column)),
    whose mean prediction is scored; ``standardize`` fits each group's targets standardized by
    its training rows' mean and (population) std, and ``label_smoothing`` is cross_entropy's."""
    first = configs[0]
    k = first.submodels
    columns = [c for c in configs for _ in range(k)]
    G, C = len(train_rows), len(configs)
    generator = make_generator(seed, X.device)
    arch = Architecture(first.model, len(first.widths), first.activation, X.shape[1], n_out)
    init = StackedModel(arch, G, [c.widths for c in columns], [0.0] * len(columns), X.device,
                        trainer.column_generators(seed, configs, X.device)).views()
    plan = BatchPlan(train_rows, first.batch_size, X.device)
    total = first.epochs * plan.steps
    nets, optimizers, schedulers = {}, {}, {}
    for g in range(G):
        for m, config in enumerate(columns):
            net = nets[g, m] = reference_net(init, g, m, config, X.shape[1], n_out)
            kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
            optimizers[g, m] = kind(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            schedulers[g, m] = torch.optim.lr_scheduler.LambdaLR(optimizers[g, m], lr_factor(config.schedule, total))
    target = torch.log(y) if first.log_target else y
    standard = [None] * G
    if first.standardize and n_out == 1:
        standard = [(target[r].mean(), target[r].std(correction=0), target[r].min(), target[r].max())
                    for r in train_rows]
    curves = np.zeros((first.epochs, 2, G, C))
    failed = np.zeros((G, C), dtype=int)
    for epoch in range(first.epochs):
        epoch_errors = torch.zeros(G, C)  # float32 sums, as on the device
        order = plan.order(generator).clone()
        for start, stop in plan.bounds:
            for g in range(G):
                rows = order[g, start:min(stop, plan.counts[g])]
                goal = target[rows] if standard[g] is None else (target[rows] - standard[g][0]) / standard[g][1]
                for m, config in enumerate(columns):
                    out = nets[g, m](X[rows])
                    loss = F.cross_entropy(out, y[rows], label_smoothing=config.label_smoothing) if n_out > 1 \
                        else F.mse_loss(out[:, 0], goal)
                    # fit's failure test: squared errors, or softmax - one-hot (finite iff the logits are)
                    with torch.no_grad():
                        error = out.softmax(1) - F.one_hot(y[rows], n_out) if n_out > 1 else out[:, 0] - goal
                        epoch_errors[g, m // k] += error.square().sum() if n_out == 1 else error.sum()
                    optimizers[g, m].zero_grad()
                    loss.backward()
                    optimizers[g, m].step()
                    schedulers[g, m].step()
        failed[(failed == 0) & ~torch.isfinite(epoch_errors).numpy()] = epoch + 1
        with torch.no_grad():
            for g in range(G):
                for c in range(C):
                    for part, rows in enumerate((train_rows[g], valid_rows[g])):
                        outs = [nets[g, c * k + j](X[rows]) for j in range(k)]
                        curves[epoch, part, g, c] = _mean_metric(outs, y[rows], metric, first.log_target, standard[g])
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
    columns = [c for c in configs for _ in range(configs[0].submodels)]
    model = result.model
    for (g, m), net in nets.items():
        stacked = reference_net(views, g, m, columns[m], X.shape[1], n_out)
        for ours, theirs in zip(stacked.parameters(), net.parameters()):
            scale = theirs.detach().abs().max().item()
            torch.testing.assert_close(ours, theirs.detach(), rtol=rtol, atol=rtol * scale)
        with torch.no_grad():  # the raw outputs (the target transform's learned space, standardized)
            expected = net(X)
            scale = expected.abs().max().item()
            torch.testing.assert_close(predict_raw(model, X)[g, :, m], expected, rtol=rtol, atol=rtol * scale)
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


# ----------------------------------------------------------------------------- issue 14: the MLP's training options


@pytest.mark.parametrize("model, log_target, metric", [("linear", False, "rmse"), ("mlp", True, "log_rmse"),
                                                       ("mlp", False, "log_rmse")])
def test_standardized_targets_match_reference(model, log_target, metric):
    """Each fold fits its own training targets standardized (mean 0, std 1), and predicts them
    back in the labels' scale, clipped to the range it trained on."""
    X, y = regression_data(seed=5)
    configs = [TrainParams(model=model, hidden=(6,), lr=lr, epochs=4, batch_size=16, standardize=True,
                           log_target=log_target) for lr in (0.01, 0.05)]
    result = assert_matches_reference(X, y, configs, metric=metric)
    train, _ = contiguous_folds(len(X), 4)
    target = torch.log(y) if log_target else y
    for g, rows in enumerate(train):
        transform = result.transform
        torch.testing.assert_close(transform.shift[g].float(), target[rows].mean())
        torch.testing.assert_close(transform.scale[g].float(), target[rows].std(correction=0))
        torch.testing.assert_close(torch.stack([transform.low[g], transform.high[g]]).float(),
                                   torch.stack([target[rows].min(), target[rows].max()]))
    plain = fit(X, y, train, [c.with_(standardize=False) for c in configs], metric=metric,
                valid_rows=contiguous_folds(len(X), 4)[1])
    assert not np.allclose(plain.valid_curve, result.valid_curve)  # the control: standardizing changes training


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
@pytest.mark.parametrize("lrs", [(0.02,), (0.01, 0.04)], ids=["fused", "per-config"])
def test_onecycle_schedule_matches_reference(optimizer, lrs):
    X, y = regression_data(seed=6)
    configs = [TrainParams(model="mlp", hidden=(h,), lr=lr, weight_decay=0.1, epochs=6, batch_size=16,
                           optimizer=optimizer, schedule="onecycle") for lr in lrs for h in (8, 5)]
    assert_matches_reference(X, y, configs, metric="log_rmse")


def test_onecycle_warms_up_then_decays_to_zero():
    total = 400
    factors = np.array([trainer._lr_scale("onecycle", step, total) for step in range(1, total + 1)])
    warm = round(trainer.WARMUP * total)
    assert warm == 20
    np.testing.assert_allclose(factors[:warm], np.arange(1, warm + 1) / warm)  # linear from 1/warm to 1
    assert factors.max() == factors[warm - 1] == 1.0
    assert (np.diff(factors[warm - 1:]) < 0).all()  # then a strictly falling cosine
    middle = warm + (total - warm) // 2
    assert factors[middle - 1] == pytest.approx(0.5)
    assert factors[-1] == pytest.approx(0.0, abs=1e-12) and factors[-2] < 1e-4
    # few steps: the warm-up is at least one step and the factors stay in [0, 1]
    short = [trainer._lr_scale("onecycle", step, 3) for step in (1, 2, 3)]
    assert short[0] == 1.0 and 0 <= short[2] < short[1] < 1
    assert [trainer._lr_scale("constant", s, 10) for s in (1, 10)] == [1.0, 1.0]


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_label_smoothing_matches_reference(model):
    X, y = classification_data(seed=7)
    configs = [TrainParams(model=model, hidden=(h,), lr=0.05, epochs=4, batch_size=16, label_smoothing=0.2)
               for h in (7, 4)]
    smoothed = assert_matches_reference(X, y, configs, metric="accuracy", n_out=3)
    train, valid = contiguous_folds(len(X), 4)
    sharp = fit(X, y, train, [c.with_(label_smoothing=0.0) for c in configs], metric="accuracy", valid_rows=valid,
                n_out=3)
    assert not torch.allclose(sharp.model.theta, smoothed.model.theta)  # the control


@pytest.mark.parametrize("metric, n_out, log_target", [("log_rmse", 1, True), ("rmse", 1, False),
                                                       ("accuracy", 3, False)])
def test_submodels_match_reference(metric, n_out, log_target):
    """k submodels per config: adjacent columns of the stack, each from its own initialisation,
    trained alone and scored by their mean (in the metric's space)."""
    X, y = classification_data(seed=8) if n_out > 1 else regression_data(seed=8)
    configs = [TrainParams(model="mlp", hidden=(h,), lr=lr, epochs=3, batch_size=16, submodels=3,
                           log_target=log_target) for lr in (0.01, 0.05) for h in (6, 4)]
    result = assert_matches_reference(X, y, configs, metric=metric, n_out=n_out)
    assert result.model.configs == 12 and result.train_curve.shape == (3, 4, 4)
    views = result.model.views()
    assert not torch.allclose(views[0][:, :, 0], views[0][:, :, 1])  # submodels start apart


def test_the_auto_recipes_mlp_options_together_match_reference():
    """Standardized log targets, AdamW with onecycle and 4 submodels per config (dropout aside)."""
    X, y = regression_data(seed=9)
    configs = [TrainParams(model="mlp", hidden=(8, 6), lr=5e-3, weight_decay=1e-4, epochs=4, batch_size=16,
                           optimizer="adamw", schedule="onecycle", standardize=True, submodels=4, log_target=True)]
    assert_matches_reference(X, y, configs, metric="log_rmse")


def test_standardized_linear_model_recovers_least_squares_like_the_unstandardized_one():
    """A well-conditioned linear problem, full batches: with or without standardized targets
    the linear model converges to the least-squares fit (standardized: clipped to the targets'
    range), so standardizing changes the path, not the solution."""
    g = torch.Generator().manual_seed(10)
    X = torch.randn(200, 4, generator=g)
    y = 20 + X @ torch.tensor([3.0, -2.0, 1.0, 0.5]) + 0.5 * torch.randn(200, generator=g)
    rows = [torch.arange(200)]
    base = TrainParams(lr=0.1, epochs=1500, batch_size=200, schedule="cosine")
    ones = torch.cat([X, torch.ones(200, 1)], 1).double()
    solution = torch.linalg.lstsq(ones, y.double().unsqueeze(1)).solution
    ols = (ones @ solution)[:, 0].float()

    def predicted(result):  # in the labels' scale: destandardized and clipped by the target transform
        return predictions(predict_raw(result.model, X), result.transform, 1)[0, :, 0, 0]

    plain = predicted(fit(X, y, rows, [base], metric="rmse"))
    standard = predicted(fit(X, y, rows, [base.with_(standardize=True)], metric="rmse"))
    torch.testing.assert_close(plain, ols, rtol=0, atol=2e-3)
    torch.testing.assert_close(standard, ols.clamp(y.min(), y.max()), rtol=0, atol=2e-3)
    assert ((ols < y.min()) | (ols > y.max())).any()  # the clip is exercised


@pytest.mark.parametrize("submodels", [1, 3])
def test_inner_valid_keeps_the_best_epochs_weights(submodels):
    """With an inner split, each fold's model holds the weights of the epoch that scored best on
    its held-out rows: the same weights as a run of exactly that many epochs (the same seed
    draws the same initialisation, inner split and batch orders), and its valid score is the
    valid curve at that epoch."""
    X, y = regression_data(n=120, seed=11)
    train, valid = contiguous_folds(len(X), 3)
    config = TrainParams(model="mlp", hidden=(32,), lr=0.05, epochs=25, batch_size=8, inner_valid=0.25,
                         submodels=submodels)
    result = fit(X, y, train, [config], metric="rmse", valid_rows=valid, seed=3)
    best = result.best_epoch[:, 0]
    assert (best >= 1).all() and (best < config.epochs).any(), best  # some fold overfits: not the last epoch
    np.testing.assert_array_equal(result.final_valid[:, 0], result.valid_curve[best - 1, np.arange(3), 0])
    predictions = predict_raw(result.model, X)[..., 0].mean(2)  # the submodels' mean (rmse: as they are)
    for g, rows in enumerate(valid):
        rmse = (predictions[g, rows] - y[rows]).square().mean().sqrt().item()
        assert rmse == pytest.approx(result.final_valid[g, 0], rel=1e-5)
    views = result.model.views()
    for g in range(3):
        short = fit(X, y, train, [config.with_(epochs=int(best[g]))], metric="rmse", valid_rows=valid, seed=3)
        assert short.best_epoch[g, 0] == best[g]
        for ours, theirs in zip(views, short.model.views()):
            torch.testing.assert_close(ours[g], theirs[g], rtol=1e-5, atol=1e-6)
