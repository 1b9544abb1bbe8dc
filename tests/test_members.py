"""The member protocol (issue 14), family by family, on small generated tables: fit on G row
sets, predict (G, rows, outputs), save a weights-only state and load it back, report a budget,
learn in log space when the labels allow it, and keep regressors inside the labels they saw."""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import Ridge

from pipeline.errors import ParamError, UsageError
from pipeline.folds import fold_rows
from pipeline.progress import Progress, Step
from pipeline.tabular.features import FeatureParams, Features, build_features
from pipeline.tabular.members import LightGBMMember, SklearnMember, TorchMember, TrainingSet, build, declared, \
    load_fitted, score_groups
from pipeline.tabular.members.boosting import LightGBMParams
from pipeline.tabular.tables import Tables, TableSpec
from pipeline.tabular.trainer import TrainParams

CPU = torch.device("cpu")
TASKS = {"regression": ("regression", 0, "log_rmse"), "binary": ("classification", 2, "auc"),
         "multiclass": ("classification", 3, "logloss")}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """OpenMP (LightGBM, scikit-learn's boosted trees, torch) on one thread: on a busy 2-core
    machine a second thread spins, and a 100-row LightGBM fit took 10-40 s instead of 0.05 s."""
    import lightgbm  # noqa: F401  (loaded, so that its OpenMP is limited too)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def generated(kind: str = "regression", *, n: int = 150, n_test: int = 40, seed: int = 0, signed: bool = False,
              metric: str | None = None, test_shift: float = 0.0, bins: int = 0) -> Features:
    """A small table: three numbers (one with NaN), a category (with NaN) and a label that
    depends on them: positive prices (or ``signed`` values), yes/no, or classes a/b/c.
    ``test_shift`` moves the test rows' numbers far from the training rows'; ``bins``: the
    numbers' quantile splines too."""
    task, classes, default = TASKS[kind]
    r = np.random.default_rng(seed)
    N = n + n_test
    frame = pd.DataFrame({"x1": r.normal(size=N), "x2": r.normal(size=N), "x3": r.uniform(0, 10, N),
                          "kind": r.choice(["u", "v", "w", None], N)})
    frame.loc[r.random(N) < 0.05, "x3"] = np.nan
    frame.loc[n:, ["x1", "x2"]] += test_shift
    score = frame.x1 + 0.5 * frame.x2 - 0.1 * frame.x3.fillna(5) - 0.8 * (frame.kind == "u")
    if task == "regression":
        y = 10 * score + r.normal(0, 1, N) if signed else np.exp(3 + 0.5 * score + r.normal(0, 0.1, N))
    elif classes == 2:
        y = np.where(score + r.normal(0, 0.5, N) > score.median(), "yes", "no")
    else:
        y = np.array(["a", "b", "c"])[np.digitize(score + r.normal(0, 0.3, N), np.quantile(score, [1 / 3, 2 / 3]))]
    spec = TableSpec("id", "y", task, metric or ("rmse" if signed else default))
    train, test = frame.iloc[:n].reset_index(drop=True), frame.iloc[n:].reset_index(drop=True)
    tables = Tables(train, test, pd.Series(y[:n]), pd.Series(np.arange(n, N)), spec, Path("train.csv"),
                    Path("test.csv"))
    return build_features(tables, FeatureParams(numeric_bins=bins))


def three_folds(features: Features) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    splits = fold_rows(features.y, 3, "shuffled", 0, stratify=features.spec.scorer.task.stratify)
    return [tr for tr, _ in splits], [va for _, va in splits]


MLP = TrainParams(model="mlp", hidden=(16,), epochs=4, lr=0.01, batch_size=32, optimizer="adamw",
                  schedule="onecycle", standardize=True, submodels=2, log_target="auto")
FAMILIES = {
    "mlp": lambda: TorchMember(MLP),
    "linear": lambda: TorchMember(TrainParams(epochs=4, lr=0.05, batch_size=32, standardize=True, log_target="auto")),
    "glm": lambda: SklearnMember("glm", log_target="auto"),
    "gbm": lambda: SklearnMember("gbm", (("max_iter", 20),), log_target="auto"),
    "lightgbm": lambda: LightGBMMember(LightGBMParams(n_estimators=60, min_child_samples=5, log_target="auto")),
}


@functools.cache
def data_for(kind: str, **options) -> TrainingSet:
    return TrainingSet(generated(kind, **options), CPU)


@functools.cache
def fitted_for(family: str, kind: str):
    """``family`` fit on the three folds' training rows of ``kind``'s table, scored on the rest."""
    data = data_for(kind)
    train, valid = three_folds(data.features)
    return FAMILIES[family]().fit(data, train, valid_rows=valid)


# ----------------------------------------------------------------------------- fit and predict


@pytest.mark.parametrize("kind", sorted(TASKS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fit_on_three_row_sets_predicts_three_models(family, kind):
    data = data_for(kind)
    fitted = fitted_for(family, kind)
    outputs = max(1, len(data.features.classes))
    for inputs in (data.train, data.test):
        predictions = fitted.predict(inputs)
        assert predictions.shape == (3, len(inputs), outputs) and predictions.dtype == torch.float32
        assert torch.isfinite(predictions).all()
        if kind == "regression":
            assert (predictions > 0).all()
        else:
            assert ((predictions >= 0) & (predictions <= 1)).all()
            torch.testing.assert_close(predictions.sum(-1), torch.ones(3, len(inputs)), atol=1e-5, rtol=0)
        assert not torch.allclose(predictions[0], predictions[1])  # each row set trains its own model
    assert len(fitted.report.failed_epoch) == 3 and not fitted.report.failed_epoch.any()
    # each model scores on its own held-out rows: better than a constant guess
    _, valid = three_folds(data.features)
    scores = score_groups(fitted.predict(data.train), data.y, valid, data.metric)
    assert len(scores) == 3 and all(math.isfinite(s) for s in scores)
    if kind == "binary":
        assert min(scores) > 0.7  # auc
    elif kind == "multiclass":
        assert max(scores) < math.log(3)  # below the log-loss of 1/3 each
    else:
        constant = float(np.log(data.features.y.numpy()).std())  # the log-rmse of the best constant
        assert max(scores) < constant


@pytest.mark.parametrize("model, task", [("lasso", "classification"), ("svr", "classification"),
                                         ("logistic", "regression")])
def test_a_family_that_does_not_fit_the_task_is_a_one_line_usage_error(model, task):
    data = data_for("binary" if task == "classification" else "regression")
    with pytest.raises(UsageError) as caught:
        SklearnMember(model).fit(data, three_folds(data.features)[0])
    message = str(caught.value)
    assert "\n" not in message and f"ensemble member {model} is for" in message and f"not {task}" in message


# ----------------------------------------------------------------------------- saving and loading


def round_trip(state: dict, tmp_path: Path) -> dict:
    path = tmp_path / "member.pt"
    torch.save(state, path)
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("kind", sorted(TASKS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_loaded_state_predicts_any_rows_as_the_fitted_member(family, kind, tmp_path):
    data = data_for(kind)
    fitted = fitted_for(family, kind)
    loaded = load_fitted(round_trip(fitted.state(), tmp_path), data.metric, CPU)
    assert loaded.label == fitted.label
    for inputs in (data.train, data.test):
        torch.testing.assert_close(loaded.predict(inputs), fitted.predict(inputs), rtol=1e-6, atol=1e-7)


def test_a_scikit_learn_members_state_holds_its_estimators_not_predictions(tmp_path):
    """Saved with skops: the state is the estimators themselves, loadable without pickle."""
    data = data_for("regression")
    state = round_trip(fitted_for("gbm", "regression").state(), tmp_path)
    assert state["family"] == "gbm" and state["models"].dtype == torch.uint8
    assert "test_predictions" not in state
    tampered = {**state, "models": torch.frombuffer(bytearray(b"not a skops file"), dtype=torch.uint8)}
    with pytest.raises(Exception):
        load_fitted(tampered, data.metric, CPU)


# ----------------------------------------------------------------------------- budgets


def test_lightgbm_reports_its_best_round_and_trains_a_given_budget():
    data = data_for("regression")
    train, valid = three_folds(data.features)
    member = LightGBMMember(LightGBMParams(n_estimators=400, min_child_samples=5, learning_rate=0.2,
                                           log_target="auto"))
    chosen = member.fit(data, train, valid_rows=valid)
    rounds = [b.current_iteration() for group in chosen.models for b in group]
    assert chosen.report.budget == pytest.approx(np.mean(rounds))  # the saved boosters stop at their best round
    assert 1 <= min(rounds) and max(rounds) < 400  # early stopping stopped them
    assert len(set(rounds)) > 1  # each row set found its own
    given = member.fit(data, train, budget=12.4)
    assert given.report.budget is None
    assert [b.current_iteration() for group in given.models for b in group] == [12] * 3
    other = member.fit(data, train, budget=30)
    assert not torch.allclose(other.predict(data.test), given.predict(data.test))


def test_lightgbm_multiclass_budget_is_rounds_not_trees():
    data = data_for("multiclass")
    fitted = LightGBMMember(LightGBMParams(min_child_samples=5)).fit(data, three_folds(data.features)[0], budget=7)
    assert [b.current_iteration() for group in fitted.models for b in group] == [7] * 3
    assert fitted.models[0][0].num_trees() == 21  # a tree per class and round


class Counting(Progress):
    """Records each step a member opens: its name, total and unit, and the units it advanced."""

    def __init__(self):
        super().__init__()
        self.steps: list[dict] = []

    def step(self, name: str, total: int, unit: str = "epoch", higher_is_better: bool = False) -> Step:
        record = {"name": name, "total": total, "unit": unit, "done": 0}
        self.steps.append(record)

        class Counted(Step):
            def advance(self, n: int = 1, curves=None) -> None:
                record["done"] += n

        return Counted()


def epochs_run(member: TorchMember, data: TrainingSet, rows, **options) -> tuple[object, list[int]]:
    """The fitted member and [epochs it trained, epochs it announced]."""
    progress = Counting()
    fitted = member.fit(data, rows, progress=progress, **options)
    [step] = progress.steps
    assert step["unit"] == "epoch"
    return fitted, [step["done"], step["total"]]


@pytest.mark.parametrize("kind", ["regression", "binary"])
def test_torch_member_with_inner_valid_reports_a_budget_and_trains_a_given_one(kind):
    data = data_for(kind)
    train, valid = three_folds(data.features)
    member = TorchMember(MLP.with_(epochs=12, inner_valid=0.2, lr=0.03))
    fitted, run = epochs_run(member, data, train, valid_rows=valid)
    assert run == [12, 12]
    assert 1 <= fitted.report.budget <= 12
    assert TorchMember(MLP).fit(data, train).report.budget is None  # no inner split: the last epoch, no budget
    final, run = epochs_run(member, data, [torch.arange(len(data.y))], budget=4.6)
    assert run == [5, 5] and final.report.budget is None  # every row, for round(4.6) epochs, no inner split
    assert final.predict(data.test).shape == (1, len(data.test), max(1, len(data.features.classes)))


# ----------------------------------------------------------------------------- log_target "auto"


def fit_all_rows(member, data):
    return member.fit(data, [torch.arange(len(data.y))])


def logged(fitted) -> bool:
    return fitted.transform.log


@pytest.mark.parametrize("family", ["mlp", "linear", "lightgbm", "glm"])
def test_log_target_auto_is_log_for_positive_labels_and_raw_otherwise(family):
    """``auto`` trains exactly as ``True`` on positive labels and as ``False`` on signed ones."""
    def member(log_target):
        base = FAMILIES[family]()
        if isinstance(base, (TorchMember, LightGBMMember)):
            return dataclasses.replace(base, config=dataclasses.replace(base.config, log_target=log_target))
        return dataclasses.replace(base, log_target=log_target)

    for data, expected in ((data_for("regression"), True), (data_for("regression", signed=True), False)):
        auto = fit_all_rows(member("auto"), data)
        same = fit_all_rows(member(expected), data)
        assert logged(auto) is expected
        torch.testing.assert_close(auto.predict(data.test), same.predict(data.test), rtol=0, atol=0)
    positive = data_for("regression")
    raw, log = (fit_all_rows(member(flag), positive).predict(positive.test) for flag in (False, True))
    assert not torch.allclose(raw, log, rtol=1e-3)  # the control: log space does change the model


def test_log_target_auto_of_a_linear_model_fits_the_log_labels():
    """A ridge with ``auto`` on prices is exp of scikit-learn's ridge on log prices; on signed
    labels it is the ridge on the labels themselves."""
    for data, forward, back in ((data_for("regression"), np.log, np.exp),
                                (data_for("regression", signed=True), lambda v: v, lambda v: v)):
        X, y = data.X.numpy(), data.labels
        fitted = fit_all_rows(SklearnMember("ridge", (("alpha", 1.0),), log_target="auto"), data)
        target = forward(y.astype(np.float64))
        expected = back(np.clip(Ridge(alpha=1.0).fit(X, target).predict(data.test.dense.numpy()),
                                target.min(), target.max()))
        np.testing.assert_allclose(fitted.predict(data.test)[0, :, 0].numpy(), expected, rtol=1e-5)


def test_log_target_auto_is_log1p_under_rmsle_even_with_zero_labels():
    data = data_for("regression", metric="rmsle")
    y = data.features.y.clone()
    y[:10] = 0.0  # rmsle takes zeros: log1p(0) = 0
    features = Features(**{**data.features.__dict__, "y": y})
    zeros = TrainingSet(features, CPU)
    assert zeros.task.learns_in_log("auto", zeros.metric, zeros.y) and zeros.metric.log[0] is torch.log1p
    fitted = fit_all_rows(SklearnMember("glm", log_target="auto"), zeros)
    assert fitted.transform.log and (fitted.predict(zeros.train) >= 0).all()


def test_log_target_true_on_signed_labels_is_a_one_line_param_error():
    data = data_for("regression", signed=True)
    for member in (TorchMember(MLP.with_(log_target=True)), SklearnMember("glm", log_target=True),
                   LightGBMMember(LightGBMParams(log_target=True))):
        with pytest.raises(ParamError) as caught:
            fit_all_rows(member, data)
        assert str(caught.value) == "log_target = True: needs positive labels (or metric rmsle)"


# ----------------------------------------------------------------------------- clipping


def outside(predictions: torch.Tensor, data: TrainingSet, rows: list[torch.Tensor]) -> list[int]:
    """Per group, how many predictions fall outside its training labels' range."""
    y = data.features.y
    return [int(((p[:, 0] < y[r].min() * (1 - 1e-5)) | (p[:, 0] > y[r].max() * (1 + 1e-5))).sum())
            for p, r in zip(predictions, rows)]


@pytest.mark.parametrize("log_target", [True, False])
def test_standardized_mlp_predicts_inside_the_training_labels_range(log_target):
    """Test rows 8 standard deviations away: the MLP extrapolates far outside the prices it saw,
    and the standardized model clips its outputs to each row set's own range."""
    data = data_for("regression", test_shift=8.0)
    train, _ = three_folds(data.features)
    fitted = TorchMember(MLP.with_(log_target=log_target, epochs=20, lr=0.03)).fit(data, train)
    assert outside(fitted.predict(data.test), data, train) == [0, 0, 0]
    fitted.transform.low[:], fitted.transform.high[:] = -math.inf, math.inf  # the control: unclipped
    assert min(outside(fitted.predict(data.test), data, train)) > 0


@pytest.mark.parametrize("member", [SklearnMember("ridge", (("alpha", 1e-3),), log_target=False),
                                    SklearnMember("glm", log_target=True)], ids=["ridge", "glm-log"])
def test_scikit_learn_regressors_predict_inside_the_training_labels_range(member):
    data = data_for("regression", test_shift=8.0)
    train, _ = three_folds(data.features)
    fitted = member.fit(data, train)
    assert outside(fitted.predict(data.test), data, train) == [0, 0, 0]
    fitted.transform.low[:], fitted.transform.high[:] = -math.inf, math.inf  # the control: a linear model extrapolates
    assert min(outside(fitted.predict(data.test), data, train)) > 0


# ----------------------------------------------------------------------------- the view without splines


@pytest.mark.parametrize("family, table", [("mlp", {"hidden": [16], "epochs": 4, "lr": 0.01, "batch_size": 32}),
                                           ("glm", {})])
def test_a_member_without_splines_reads_only_the_plain_columns(family, table, tmp_path):
    """``splines = false``: the member fits and predicts on the scaled numbers and one-hot
    categories alone, so noise in the spline columns changes none of its predictions, and does
    change those of the same member with them; saved and loaded, it predicts the same."""
    data = data_for("binary", bins=8)
    width = data.features.plain_width
    assert 0 < width < data.X.shape[1]
    noisy = dataclasses.replace(data.test, dense=data.test.dense.clone())
    noisy.dense[:, width:] = torch.randn(noisy.dense[:, width:].shape, generator=torch.Generator().manual_seed(0))
    train, valid = three_folds(data.features)
    plain = build(family, {**table, "splines": False})
    assert plain.used_params(data.task) == {**build(family, table).used_params(data.task), "splines": False}
    fitted = plain.fit(data, train, valid_rows=valid)
    assert fitted.label == f"{family} (no splines)"
    torch.testing.assert_close(fitted.predict(noisy), fitted.predict(data.test))
    with_splines = build(family, table).fit(data, train)
    assert not torch.allclose(with_splines.predict(noisy), with_splines.predict(data.test))
    loaded = load_fitted(round_trip(fitted.state(), tmp_path), data.metric, CPU)
    assert loaded.label == fitted.label
    torch.testing.assert_close(loaded.predict(data.test), fitted.predict(data.test))


def test_splines_is_a_param_of_the_families_that_read_the_dense_columns():
    assert declared("mlp")["splines"] is True and declared("glm")["splines"] is True
    assert "splines" not in declared("lightgbm")
    with pytest.raises(UsageError, match="ensemble member lightgbm has no param 'splines'"):
        build("lightgbm", {"splines": False})  # trees read the native columns: no splines to leave out
    with pytest.raises(ParamError, match="splines"):
        build("mlp", {"splines": "no"})
