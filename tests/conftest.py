"""Shared fixtures. ``shared_datasets`` is the local mirror ``../shared/datasets``: tests that need
it skip where it is absent, and fail instead under ``CI=true`` (CI always has it). ``server`` is a
local HTTP server (see ``helpers.Server``); the helpers themselves live in ``helpers.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from helpers import serving

REPO = Path(__file__).resolve().parents[1]
# CI replays the same examples on every run, so that a landing never hangs on a random draw;
# local runs keep drawing new ones, which is where property tests find bugs.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI", "").lower() == "true":
    settings.load_profile("ci")

# CI runs the torchvision tests in an environment of their own (PIPELINE_VISION=required there);
# its main environment, which cannot import torchvision, leaves them to it rather than skip them.
collect_ignore = ["test_vision.py"] if os.environ.get("PIPELINE_VISION") == "elsewhere" else []

SHARED_DATASETS = Path(os.environ.get("PIPELINE_TEST_MIRROR", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not (SHARED_DATASETS / "kaggle_house_pred_train.csv").exists():
        message = f"the dataset mirror {SHARED_DATASETS} is absent"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true requires it)")
        pytest.skip(message)
    return SHARED_DATASETS


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """No test reads the developer's own workspace or mirror settings."""
    monkeypatch.delenv("PIPELINE_HOME", raising=False)
    monkeypatch.delenv("PIPELINE_MIRROR", raising=False)


@pytest.fixture
def server():
    """A local HTTP server (``helpers.Server``): serves ``files`` or files under ``root``, counts
    requests per path, and misbehaves on cue."""
    with serving() as state:
        yield state
