"""The [vision] extra (issue 17): what torchvision checks and provides. CI runs this file in a
second environment with torchvision (``PIPELINE_VISION=required`` there, so a torchvision that
does not import fails instead of skipping); elsewhere it skips."""

from __future__ import annotations

import gzip
import os

import pytest
import torch

from pipeline.images.data import CLASS_NAMES, read_idx
from pipeline.images.models import ResNet, build_classifier, resnet_backbone


@pytest.fixture(scope="module")
def torchvision():
    try:
        import torchvision
        import torchvision.models.resnet  # noqa: F401
    except Exception as exc:  # absent, or built for another torch
        if os.environ.get("PIPELINE_VISION") == "required":
            pytest.fail(f"torchvision does not import: {exc}")
        pytest.skip(f"torchvision does not import: {exc}")
    return torchvision


def test_read_idx_matches_torchvision(torchvision, shared_datasets, tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in (shared_datasets / "fashion-mnist").glob("*-ubyte.gz"):
        (raw / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
    for train, prefix in ((True, "train"), (False, "t10k")):
        reference = torchvision.datasets.FashionMNIST(tmp_path, train=train, download=False)
        folder = shared_datasets / "fashion-mnist"
        assert torch.equal(read_idx(folder / f"{prefix}-images-idx3-ubyte.gz"), reference.data)
        assert torch.equal(read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").long(), reference.targets)
        assert list(reference.classes) == list(CLASS_NAMES)


def test_resnet_uses_torchvisions_backbone_where_it_imports(torchvision):
    model = build_classifier("resnet", blocks=[1, 1, 1, 1])
    assert isinstance(model[1], torchvision.models.resnet.ResNet)


@pytest.mark.parametrize("blocks", [[2, 2, 2, 2], [1, 2, 1, 1]])
def test_our_resnet_is_torchvisions_in_names_shapes_and_outputs(torchvision, blocks):
    """A checkpoint trained where torchvision imports loads where it does not, and computes the same."""
    torch.manual_seed(0)
    theirs, ours = resnet_backbone(blocks, use_torchvision=True), resnet_backbone(blocks, use_torchvision=False)
    assert isinstance(ours, ResNet) and not isinstance(theirs, ResNet)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    with torch.no_grad():  # trained-looking batch-norm statistics, so that eval mode uses them
        for module in theirs.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 3, 64, 64)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))
    ours.train(), theirs.train()
    torch.testing.assert_close(ours(x), theirs(x))
