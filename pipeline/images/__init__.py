"""Image competitions (Fashion-MNIST): IDX files -> device tensors -> classifiers -> evaluation, submission."""
