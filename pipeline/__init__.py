"""pipeline: a Kaggle competition pipeline (House Prices, Fashion-MNIST, any declared tabular target)."""

__version__ = "0.1.0"
