"""The built-in targets: d2l's House Prices (``house``) and Fashion-MNIST (``fashion``)."""

from __future__ import annotations

from pipeline.hub import DATA_HUB, GROUPS
from pipeline.tabular.presets import AUTO, FAMILY_DEFAULTS, MLP
from pipeline.tabular.tables import TableSpec
from pipeline.targets.images import IMAGE_DEFAULTS, HubImages
from pipeline.targets.tabular import TabularTarget

# d2l 4.10's recipe, reachable with flags (see the README): linear, raw prices, lr 5, 5 contiguous folds.
D2L_LINEAR = {"lr": 5.0, "weight_decay": 0.0, "batch_size": 64, "epochs": 100, "log_target": False}
# and d2l's features: every numeric column a number, every other one-hot on all its levels
D2L_FEATURES = {"roles": False, "max_levels": 0, "min_count": 1}
# The best recipe measured on house (README, "Recipes"): log prices, log1p of skewed columns,
# winsorized numeric columns, and the geometric mean of a Lasso, an RBF support-vector machine and
# boosted trees on random 30% feature subsets (averaged over 3 seeds), fit per fold.
BEST_HOUSE = {
    "log_skewed": 0.75, "clip_quantile": 0.005, "split": "contiguous", "seeds": 3,
    "ensemble": [
        {"model": "lasso", "alpha": 0.0005, "max_iter": 50000, "log_target": True},
        {"model": "svr", "C": 20.0, "epsilon": 0.03, "gamma": 0.001, "log_target": True},
        {"model": "gbm", "learning_rate": 0.03, "max_iter": 1500, "max_leaf_nodes": 7, "min_samples_leaf": 2,
         "l2_regularization": 1.0, "max_features": 0.3, "random_state": 0, "log_target": True},
    ],
}
# `--model mlp` on house: the best recipe's features, and the one-cycle schedule's fixed budget
# of 30 epochs on all of each fold's rows, the budget CV found (mean valid at seeds 0 and 1 for
# 15/20/30/45/60 epochs: 0.1234/0.1225/0.1211/0.1224/0.1239 and 0.1238/0.1224/0.1217/0.1219/0.1243;
# the best epoch picked on a 15% inner split instead: 0.1253 and 0.1239). Noisy classes need the
# inner split (benefits' AUC with a fixed budget: 0.611 against 0.674), so the MLP keeps it elsewhere.
HOUSE_MLP = {"log_skewed": 0.75, "clip_quantile": 0.005,
             "ensemble": [{**MLP, "log_target": True, "inner_valid": 0.0}]}

HOUSE = TabularTarget("house", DATA_HUB["kaggle_house_train"], DATA_HUB["kaggle_house_test"],
                      TableSpec(id="Id", label="SalePrice", task="regression", metric="log_rmse"),
                      {"model": "linear", "split": "contiguous", **D2L_FEATURES}, {**FAMILY_DEFAULTS, "linear": D2L_LINEAR},
                      {"d2l": {}, "best": BEST_HOUSE, "auto": AUTO}, "best", {"mlp": HOUSE_MLP})
FASHION = HubImages("fashion", IMAGE_DEFAULTS, tuple(DATA_HUB[n] for n in GROUPS["fashion"]))
BUILTIN = {"house": HOUSE, "fashion": FASHION}
