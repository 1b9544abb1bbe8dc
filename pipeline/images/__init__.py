"""Image competitions (Fashion-MNIST, and those declared from Kaggle's files): IDX files or image
files and pixel CSVs -> a uint8 tensor -> classifiers -> evaluation, submission."""
