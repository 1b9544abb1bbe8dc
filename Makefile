# Make targets for people who live in make; each calls the pipeline CLI (see README.md).
# The stages themselves skip work that is up to date (`pipeline status house` shows why).
PIPELINE ?= pipeline
MIRROR ?= ../shared/datasets
export PIPELINE_MIRROR ?= $(abspath $(MIRROR))

.PHONY: install test data cv submit fashion bench status runs clean

install:
	pip install torch==2.13.0 && pip install -e ".[test]"

test:
	python -m pytest

data:
	$(PIPELINE) download all

cv:
	$(PIPELINE) cv house

submit:
	$(PIPELINE) submit house --out submissions/house-submission.csv

fashion:
	$(PIPELINE) train fashion --model mlp
	$(PIPELINE) evaluate fashion --model mlp
	$(PIPELINE) submit fashion --model mlp --out submissions/fashion-submission.csv

bench:
	python benchmarks/bench.py

status:
	$(PIPELINE) status house

runs:
	$(PIPELINE) runs

clean:
	rm -rf data/*/ data/*.csv models/*.pt submissions/*.csv reports/runs pipeline.lock
