#!/usr/bin/env bash
# Every GPU figure the README asks for, as one script for a lent GPU machine (it has minutes):
# the house and Fashion-MNIST rows of bench.py on CUDA, with the cnn's and the resnet's test
# accuracy and time to 0.92 / 0.94 / 0.95 (benchmarks/convnets.py). From the repository root,
# with ../shared beside it.
set -euo pipefail
python -c "import pipeline" 2>/dev/null || pip install -q -e .
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python benchmarks/bench.py --device cuda --skip-commands --skip-recipes --skip-scale
