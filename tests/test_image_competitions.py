"""Image competitions from Kaggle's files (issue 32): `pipeline init` on a folder of images with a
labels CSV, or on CSVs of pixels, declares an image target; preprocess makes one uint8 tensor
file with a manifest; `pipeline run` ends in a submission in the sample's format (a label per
id, or a probability per class in the sample's column order); bad inputs end in one line that
names the file."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import assert_one_line_error, run_cli, statuses
from pipeline import code_graph
from pipeline.api import Pipeline
from pipeline.errors import DataError
from pipeline.images.decode import decode, decode_chunk
from pipeline.params import read_toml
from pipeline.progress import Step
from test_code_graph import tracing

CLASSES = ["cat", "dog", "frog"]
FAST = ("--model", "softmax", "--epochs", "3", "--batch-size", "32")


def _pixels(rng: np.random.Generator, k: int, size: tuple[int, int], colour: bool) -> np.ndarray:
    """Noise with a bright band where class ``k``'s is (in colour: also in channel k): easy to learn."""
    height, width = size
    image = rng.integers(0, 60, (height, width, 3) if colour else (height, width)).astype(np.uint8)
    band = slice(k * width // 3, (k + 1) * width // 3)
    if colour:
        image[:, band, k] += 150
    else:
        image[:, band] += 150
    return image


def _folder(root: Path, train: int = 240, test: int = 60, colour: bool = False, per_class: bool = False,
            sizes: tuple = ((20, 20),), extension: str = "png", seed: int = 0) -> Path:
    """A competition as Kaggle ships CIFAR-10 or Dog Breed Identification: train/ID.png,
    trainLabels.csv (id,label), test/ID.png, and a sample in its own row order, holding a label
    per id or (``per_class``) a probability per class in its own column order."""
    rng = np.random.default_rng(seed)
    for folder in ("train", "test"):
        (root / folder).mkdir(parents=True)
    labels = [CLASSES[i % 3] for i in range(train)]
    for i, label in enumerate(labels, 1):
        image = _pixels(rng, CLASSES.index(label), sizes[i % len(sizes)], colour)
        Image.fromarray(image).save(root / "train" / f"{i}.{extension}")
    test_ids = list(range(5001, 5001 + test))
    for i in test_ids:
        Image.fromarray(_pixels(rng, i % 3, sizes[0], colour)).save(root / "test" / f"{i}.{extension}")
    pd.DataFrame({"id": range(1, train + 1), "label": labels}).to_csv(root / "trainLabels.csv", index=False)
    order = rng.permutation(test_ids).tolist()
    sample = pd.DataFrame({"id": order, "frog": 1 / 3, "cat": 1 / 3, "dog": 1 / 3}) if per_class else \
        pd.DataFrame({"id": order, "label": "cat"})
    sample.to_csv(root / "sampleSubmission.csv", index=False)
    return root


def _pixel_csvs(root: Path, train: int = 240, test: int = 60, side: int = 16, seed: int = 0) -> Path:
    """Digit Recognizer's shape: train.csv (label, pixel0..), test.csv (pixels only) and a sample
    whose ImageId is a test row's number from 1."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    columns = [f"pixel{i}" for i in range(side * side)]

    def table(n: int) -> tuple[pd.DataFrame, np.ndarray]:
        ks = np.arange(n) % 3
        pixels = np.stack([_pixels(rng, k, (side, side), False).reshape(-1) for k in ks])
        return pd.DataFrame(pixels, columns=columns), ks

    frame, ks = table(train)
    frame.insert(0, "label", ks)
    frame.to_csv(root / "train.csv", index=False)
    table(test)[0].to_csv(root / "test.csv", index=False)
    pd.DataFrame({"ImageId": range(1, test + 1), "Label": 0}).to_csv(root / "sample_submission.csv", index=False)
    return root


def _zipped(folder: Path) -> Path:
    with zipfile.ZipFile(folder.with_suffix(".zip"), "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder.parent).as_posix())
    return folder.with_suffix(".zip")


def _run(ws: Path, capsys, name: str, *flags: str) -> tuple[dict, pd.DataFrame]:
    code, out, err = run_cli(ws, capsys, "run", name, *(flags or FAST), "--json")
    assert code == 0, err
    outcome = json.loads(out)
    return outcome, pd.read_csv(outcome["submission"])


def _assert_like(submission: pd.DataFrame, sample: pd.DataFrame) -> None:
    """The sample's columns in its order, its ids in its order."""
    assert list(submission.columns) == list(sample.columns)
    assert submission.iloc[:, 0].tolist() == sample.iloc[:, 0].tolist()


def _truth(ids: pd.Series) -> list[str]:
    return [CLASSES[i % 3] for i in ids]


# ----------------------------------------------------------------------------- the two shapes


@pytest.mark.parametrize("zipped", [False, True])
def test_a_folder_of_images_with_a_label_per_id(tmp_path, capsys, zipped):
    folder = _folder(tmp_path / "cifar-like")
    given = _zipped(folder) if zipped else folder
    ws = tmp_path / "ws"
    ws.mkdir()
    code, out, err = run_cli(ws, capsys, "init", str(given))
    assert code == 0, err
    declared = read_toml(ws / "pipeline.toml")["target"]["cifar-like"]
    inside = "cifar-like/" if zipped else f"{folder.resolve()}/"
    assert {k: declared[k] for k in ("images", "train", "test", "sample")} == {
        "images": inside + "train", "train": inside + "trainLabels.csv", "test": inside + "test",
        "sample": inside + "sampleSubmission.csv"}
    assert {k: declared[k] for k in ("id", "label", "classes", "metric", "size", "channels")} == {
        "id": "id", "label": "label", "classes": CLASSES, "metric": "accuracy", "size": [20, 20], "channels": 1}
    assert declared.get("archive") == (str(given.resolve()) if zipped else None)
    assert "a class per id: accuracy" in out and "pipeline run cifar-like" in out
    outcome, submission = _run(ws, capsys, "cifar-like")
    sample = pd.read_csv(folder / "sampleSubmission.csv")
    _assert_like(submission, sample)
    assert outcome["metric"] == "accuracy" and outcome["score"] > 0.8  # the held-out part's accuracy
    assert (submission["label"] == _truth(submission["id"])).mean() > 0.8
    stored = ws / "data" / "cifar-like"
    manifest = json.loads((stored / "manifest.json").read_text())
    assert manifest["sha1"] == hashlib.sha1((stored / "images.npy").read_bytes()).hexdigest()
    assert manifest["shape"] == [300, 20, 20] and (manifest["train"], manifest["test"]) == (240, 60)
    images = np.load(stored / "images.npy")
    assert images.dtype == np.uint8 and np.array_equal(images[0], np.asarray(Image.open(folder / "train" / "1.png")))
    assert manifest["test_ids"] == sample["id"].tolist()  # the sample's ids, in its order


def test_colour_jpegs_of_several_sizes_with_a_probability_per_class(tmp_path, capsys):
    """Dog Breed Identification's shape: colour JPEGs of any size, resized once to the most
    common size; the sample's columns are the classes, in its own order."""
    folder = _folder(tmp_path / "breeds", colour=True, per_class=True, sizes=((24, 30), (24, 30), (40, 33)),
                     extension="jpg")
    ws = tmp_path / "ws"
    ws.mkdir()
    assert run_cli(ws, capsys, "init", str(folder))[0] == 0
    declared = read_toml(ws / "pipeline.toml")["target"]["breeds"]
    assert (declared["metric"], declared["channels"], declared["size"], declared["label"]) == (
        "logloss", 3, [24, 30], "label")
    _, submission = _run(ws, capsys, "breeds")
    sample = pd.read_csv(folder / "sampleSubmission.csv")
    _assert_like(submission, sample)
    probabilities = submission[["frog", "cat", "dog"]]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert (probabilities.idxmax(axis=1) == _truth(submission["id"])).mean() > 0.8  # each column its own class
    assert np.load(ws / "data" / "breeds" / "images.npy", mmap_mode="r").shape == (300, 3, 24, 30)


def test_csvs_of_pixels_without_a_test_id_column(tmp_path, capsys):
    """Digit Recognizer's shape: test.csv has no ImageId; the sample's ImageId is the row's number from 1."""
    folder = _pixel_csvs(tmp_path / "digits")
    ws = tmp_path / "ws"
    ws.mkdir()
    code, out, err = run_cli(ws, capsys, "init", str(folder))
    assert code == 0, err
    declared = read_toml(ws / "pipeline.toml")["target"]["digits"]
    assert {k: declared[k] for k in ("pixels", "id", "label", "classes", "metric")} == {
        "pixels": "pixel", "id": "ImageId", "label": "label", "classes": [0, 1, 2], "metric": "accuracy"}
    assert "its rows are ids 1, 2" in out and "16x16 grey images" in out
    outcome, submission = _run(ws, capsys, "digits")
    sample = pd.read_csv(folder / "sample_submission.csv")
    _assert_like(submission, sample)
    truth = np.arange(60) % 3
    assert outcome["score"] > 0.8 and (submission["Label"].to_numpy() == truth).mean() > 0.8
    manifest = json.loads((ws / "data" / "digits" / "manifest.json").read_text())
    assert manifest["shape"] == [300, 16, 16] and manifest["test_ids"] == list(range(1, 61))


def test_preprocess_runs_once_per_input_and_a_declared_change_makes_it_stale(tmp_path, capsys):
    folder = _folder(tmp_path / "comp")
    ws = tmp_path / "ws"
    ws.mkdir()
    assert run_cli(ws, capsys, "init", str(folder))[0] == 0
    assert run_cli(ws, capsys, "train", "comp", *FAST)[0] == 0
    images = ws / "data" / "comp" / "images.npy"
    made = images.stat().st_mtime_ns
    code, _, err = run_cli(ws, capsys, "train", "comp", "--model", "mlp", "--epochs", "1")  # another model's section
    assert code == 0 and "preprocess: running" in err, err
    assert images.stat().st_mtime_ns == made  # the same inputs: the tensor file is kept
    config = ws / "pipeline.toml"
    config.write_text(config.read_text().replace("size = [20, 20]", "size = [16, 16]"))
    assert statuses(ws, capsys, "comp", *FAST)["preprocess"] == "stale param size.0 changed: 20 -> 16"
    assert run_cli(ws, capsys, "preprocess", "comp")[0] == 0
    assert np.load(images, mmap_mode="r").shape == (300, 16, 16)


def test_folds_score_each_fold_and_evaluate_scores_the_held_out_part(tmp_path, capsys):
    folder = _folder(tmp_path / "comp")
    ws = tmp_path / "ws"
    ws.mkdir()
    assert run_cli(ws, capsys, "init", str(folder))[0] == 0
    code, out, err = run_cli(ws, capsys, "train", "comp", *FAST, "--folds", "2", "--json")
    assert code == 0, err
    assert len(json.loads(out)["folds"]) == 2
    code, out, err = run_cli(ws, capsys, "evaluate", "comp", *FAST, "--folds", "2", "--tta", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["images"] == 24 and set(report["per_class"]) == set(CLASSES)  # 10% of 240, never trained on
    code, _, err = run_cli(ws, capsys, "train", "comp", *FAST, "--valid-fraction", "0")
    assert_one_line_error(code, err, "--valid-fraction 0", "holds out a part of its labelled images")


def test_no_flip_trains_without_mirror_images_and_refuses_tta(tmp_path, capsys, monkeypatch):
    """Digits are not their mirror images: --no-flip keeps the augmentation's crops (the mlp's
    crop_pad 2) without flips, and --tta (which averages each image with its mirror) is then
    refused in one line: before any training when both are given, else by the saved model's
    params. The cnn, whose augmentation is flips only, then trains without augmenting."""
    import pipeline.images.train as training
    flips = []
    augment = training.augment
    monkeypatch.setattr(training, "augment", lambda *args, **kw: flips.append(kw["flip"]) or augment(*args, **kw))
    folder = _folder(tmp_path / "comp", train=60, test=12)
    ws = tmp_path / "ws"
    ws.mkdir()
    assert run_cli(ws, capsys, "init", str(folder))[0] == 0
    flags = (*FAST, "--augment", "--no-flip")
    code, _, err = run_cli(ws, capsys, "train", "comp", *flags)
    assert code == 0, err
    assert flips and not any(flips)
    code, _, err = run_cli(ws, capsys, "evaluate", "comp", *flags, "--tta")
    assert_one_line_error(code, err, "--tta", "flip = false", "drop --tta")
    assert run_cli(ws, capsys, "evaluate", "comp", *flags)[0] == 0
    (ws / "params.toml").write_text("[comp]\nflip = false\n")  # flip = false stored, not a flag
    code, _, err = run_cli(ws, capsys, "evaluate", "comp", *FAST, "--augment", "--tta")
    assert_one_line_error(code, err, "--tta", "flip = false")
    flips.clear()
    code, _, err = run_cli(ws, capsys, "run", "comp", "--model", "cnn", "--epochs", "1", "--no-flip", "--tta")
    assert_one_line_error(code, err, "--tta", "flip = false")
    assert "train: running" not in err and not flips  # refused before any training
    (ws / "params.toml").unlink()
    assert run_cli(ws, capsys, "train", "comp", "--model", "cnn", "--epochs", "1", "--no-flip")[0] == 0
    assert not flips  # crop_pad 0 and no flips: nothing to augment
    assert run_cli(ws, capsys, "train", "comp", *FAST, "--augment")[0] == 0
    assert flips and all(flips)


def test_the_stages_code_holds_every_module_they_run(tmp_path):
    """The code graph of a declared image target's stages holds the layouts, the decoding and the
    tensor file: each stage run for real, and every module whose functions it called among its code."""
    folder = _folder(tmp_path / "comp", train=60, test=12)
    ws = tmp_path / "ws"
    ws.mkdir()
    pipeline = Pipeline(ws)
    pipeline.init(folder)
    ctx = pipeline.context("comp", {"model": "softmax", "epochs": 1})
    for stage in ctx.target.stages:
        ran: set[str] = set()
        with tracing(ran):
            stage.run(ctx)
        code = {code_graph.module_file(m).relative_to(code_graph.PACKAGE).as_posix()
                for m in code_graph.code_modules(stage.run, ctx.target)}
        assert not ran - code - {"make.py"}, (stage.name, sorted(ran - code))
        if stage.name == "preprocess":
            assert {"images/decode.py", "images/layouts/folder.py", "images/store.py"} <= ran


# ----------------------------------------------------------------------------- decoding


def test_parallel_decoding_streams_the_same_chunks_in_order(tmp_path):
    folder = _folder(tmp_path / "comp", train=90, test=1, sizes=((20, 20), (22, 18)))
    paths = [folder / "train" / f"{i}.png" for i in range(1, 91)]
    chunks = list(decode(paths, [20, 20], 1, True, Step(), workers=2, chunk=16))
    assert [len(c) for c in chunks] == [16] * 5 + [10]
    np.testing.assert_array_equal(np.concatenate(chunks), decode_chunk(paths, [20, 20], 1, True))
    (folder / "train" / "50.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"50\.png: not an image Pillow can read"):
        list(decode(paths, [20, 20], 1, True, Step(), workers=2, chunk=16))


# ----------------------------------------------------------------------------- bad inputs


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])


BAD = {
    "missing image": (lambda f: (f / "train" / "5.png").unlink(),
                      ("trainLabels.csv: id 5 has no image in", "train")),
    "unreadable file": (lambda f: (f / "train" / "7.png").write_bytes(b"\x89PNG but not really"),
                        ("train/7.png: not an image Pillow can read",)),
    "truncated image": (lambda f: _truncate(f / "train" / "8.png"), ("train/8.png: cannot decode the image",)),
    "unknown class": (lambda f: (f / "trainLabels.csv").write_text(
        (f / "trainLabels.csv").read_text().replace("\n4,cat\n", "\n4,horse\n")),
        ("trainLabels.csv: label 'horse' of id 4 is not one of the declared classes",)),
    "mixed sizes": (lambda f: Image.new("L", (21, 20)).save(f / "train" / "9.png"),
                    ("train/9.png: 20x21 pixels, not the declared 20x20",)),
    "sample id not in test/": (lambda f: (f / "sampleSubmission.csv").write_text(
        (f / "sampleSubmission.csv").read_text() + "99999,cat\n"),
        ("sampleSubmission.csv: id 99999 has no image in", "test")),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_folder_input_is_one_line_naming_the_file(tmp_path, capsys, kind):
    folder = _folder(tmp_path / "comp", train=30, test=6)
    ws = tmp_path / "ws"
    ws.mkdir()
    assert run_cli(ws, capsys, "init", str(folder))[0] == 0
    config = ws / "pipeline.toml"
    config.write_text(config.read_text() + "resize = false\n")  # mixed sizes are refused, not resized
    spoil, needles = BAD[kind]
    spoil(folder)
    code, out, err = run_cli(ws, capsys, "run", "comp", *FAST)
    assert code == 1 and out == "", err
    assert_one_line_error(code, err, *needles)
    assert not (ws / "data" / "comp" / "manifest.json").exists()


@pytest.mark.parametrize("line, needles", [
    ("1,300", ("train.csv: line 3: pixel0 is 300, not a whole number from 0 to 255",)),
    ("2,1.5", ("train.csv: line 3: pixel0 is 1.5, not a whole number from 0 to 255",)),
    ("0,x", ("train.csv: line 3: pixel0 is 'x', not a whole number from 0 to 255",)),
    ("1", ("train.csv: line 3: pixel0 is empty",)),
])
def test_a_bad_pixel_is_one_line_naming_the_file_and_line(tmp_path, capsys, line, needles):
    folder = _pixel_csvs(tmp_path / "digits", train=12, test=3, side=8)
    ws = tmp_path / "ws"
    ws.mkdir()
    assert run_cli(ws, capsys, "init", str(folder))[0] == 0
    rows = (folder / "train.csv").read_text().splitlines()
    if "," in line:  # the label and pixel0, then the row's other pixels
        rows[2] = line + "," + rows[2].split(",", 2)[2]
    else:  # a row cut short after its label
        rows[2] = line
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    code, _, err = run_cli(ws, capsys, "preprocess", "digits")
    assert_one_line_error(code, err, *needles)


def test_init_says_which_key_to_set_when_it_cannot_tell(tmp_path, capsys):
    folder = _folder(tmp_path / "two", train=12, test=3)
    shutil.copy(folder / "trainLabels.csv", folder / "moreLabels.csv")
    code, _, err = run_cli(tmp_path, capsys, "init", str(folder))
    assert_one_line_error(code, err, "the labels' CSV (id, label): found", "write [target.NAME] by hand")
    digits = _pixel_csvs(tmp_path / "digits", train=12, test=3, side=8)
    sample = pd.read_csv(digits / "sample_submission.csv").assign(ImageId=lambda f: f["ImageId"] + 10)
    sample.to_csv(digits / "sample_submission.csv", index=False)
    code, _, err = run_cli(tmp_path, capsys, "init", str(digits))
    assert_one_line_error(code, err, "has no column 'ImageId'", "not its rows' numbers 1..3")


@pytest.mark.parametrize("old, new, needle", [
    ("channels = 1", 'channels = 1\npixels = "pixel"', "images and pixels both say how the images are held"),
    ("channels = 1", "channels = 2", "channels must be 1 or 3"),
    ("size = [20, 20]", "size = [28]", "size must be [HEIGHT, WIDTH]"),
    ("channels = 1", 'channels = 1\ntask = "regression"', "'task' is a tabular target's"),
])
def test_a_bad_image_declaration_is_one_line(tmp_path, capsys, old, new, needle):
    folder = _folder(tmp_path / "comp", train=12, test=3)
    ws = tmp_path / "ws"
    ws.mkdir()
    assert run_cli(ws, capsys, "init", str(folder))[0] == 0
    config = ws / "pipeline.toml"
    config.write_text(config.read_text().replace(old, new))
    code, _, err = run_cli(ws, capsys, "status", "comp")
    assert code == 2
    assert_one_line_error(code, err, "[target.comp]", needle)
