"""Submission checks: every way a Kaggle CSV can be wrong is refused, and a refused one is never written."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import DataError
from pipeline.metrics import METRICS, Ranked
from pipeline.submissions import check_submission, like_sample, write_submission

IDS = [1461, 1462, 1463, 1464]
REGRESSION = dict(id_column="Id", label_column="SalePrice", expected_ids=IDS, positive=True)
CLASSES = ["cat", "dog", "emu"]
CLASSIFICATION = dict(id_column="Id", label_column="Label", expected_ids=IDS, classes=CLASSES)


def prices(ids=IDS, values=(120000.0, 135000.5, 99000.0, 250000.25), columns=("Id", "SalePrice")) -> pd.DataFrame:
    return pd.DataFrame({columns[0]: list(ids), columns[1]: list(values)})


def refused(frame: pd.DataFrame, checks: dict, *needles: str) -> str:
    """Assert ``check_submission`` raises a one-line DataError holding every needle; return the message."""
    with pytest.raises(DataError) as caught:
        check_submission(frame, **checks)
    message = str(caught.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_a_correct_submission_passes():
    check_submission(prices(), **REGRESSION)
    check_submission(pd.DataFrame({"Id": IDS, "Label": ["dog", "cat", "emu", "dog"]}), **CLASSIFICATION)


@pytest.mark.parametrize("columns", [
    ("id", "SalePrice"),           # wrong case
    ("Id", "Price"),               # wrong label name
    ("SalePrice", "Id"),           # swapped
])
def test_header_must_match_exactly(columns):
    frame = pd.DataFrame({columns[0]: IDS, columns[1]: [1.0] * 4})
    refused(frame, REGRESSION, "header", ",".join(columns), "Id,SalePrice")


def test_extra_column_is_refused():
    frame = prices().assign(Extra=0)
    refused(frame, REGRESSION, "Id,SalePrice,Extra", "expected exactly Id,SalePrice")


@pytest.mark.parametrize("rows", [3, 5])
def test_wrong_row_count(rows):
    ids = list(range(1461, 1461 + rows))
    refused(prices(ids, [1.0] * rows), REGRESSION, f"{rows} rows", "4")


def test_duplicate_ids():
    refused(prices([1461, 1462, 1462, 1464]), REGRESSION, "repeats Id 1462")


def test_ids_out_of_order():
    refused(prices([1462, 1461, 1463, 1464]), REGRESSION, "differ", "order")


def test_ids_of_another_test_set():
    refused(prices([1, 2, 3, 4]), REGRESSION, "differ")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_predictions(bad):
    refused(prices(values=[1.0, bad, 2.0, bad]), REGRESSION, "2 predictions are not finite", "Id 1462",
            "nothing was written")


def test_non_numeric_prediction_is_not_finite():
    frame = pd.DataFrame({"Id": IDS, "SalePrice": ["1.5", "oops", "2", "3"]}, dtype=object)
    refused(frame, REGRESSION, "not finite", "Id 1462")


@pytest.mark.parametrize("bad", [0.0, -5.0])
def test_non_positive_prediction_under_positive(bad):
    refused(prices(values=[1.0, 2.0, bad, 3.0]), REGRESSION, "Id 1463", "not positive")


def test_non_positive_prediction_is_fine_without_positive():
    check_submission(prices(values=[1.0, 0.0, -3.0, 2.0]), **{**REGRESSION, "positive": False})


def test_unknown_class_label():
    frame = pd.DataFrame({"Id": IDS, "Label": ["dog", "cat", "wolf", "dog"]})
    refused(frame, CLASSIFICATION, "'wolf'", "not a known class")


def test_unknown_integer_class_reads_as_a_plain_number():
    frame = pd.DataFrame({"Id": IDS, "Label": [0, 1, 10, 2]})
    message = refused(frame, {**CLASSIFICATION, "classes": list(range(10))}, "Label 10 ")
    assert "np." not in message


# ----------------------------------------------------------------------------- probabilities (issue 14)

BINARY = dict(id_column="Id", label_column="Churned", expected_ids=IDS, probabilities=True)
MULTICLASS = dict(id_column="Id", label_column=CLASSES, expected_ids=IDS, probabilities=True)
GOOD_ROWS = [[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.3333333, 0.3333333, 0.3333334], [0.05, 0.9, 0.05 + 5e-5]]


def p_positive(values) -> pd.DataFrame:
    return pd.DataFrame({"Id": IDS, "Churned": list(values)})


def per_class(rows) -> pd.DataFrame:
    return pd.DataFrame({"Id": IDS, **{c: [row[i] for row in rows] for i, c in enumerate(CLASSES)}})


def test_probabilities_in_bounds_pass():
    check_submission(p_positive([0.0, 0.25, 0.999, 1.0]), **BINARY)  # P(positive): no sum to check
    check_submission(per_class(GOOD_ROWS), **MULTICLASS)  # each row sums to 1 within float32's rounding


@pytest.mark.parametrize("bad", [-0.01, 1.01, 7.0])
def test_probability_of_the_positive_class_outside_0_1_is_refused(bad):
    refused(p_positive([0.5, 0.5, bad, 0.5]), BINARY, "probability for Id 1463 is outside [0, 1]")


def test_class_probability_outside_0_1_is_refused_even_when_the_row_sums_to_1():
    rows = [GOOD_ROWS[0], [1.2, -0.2, 0.0], *GOOD_ROWS[2:]]
    refused(per_class(rows), MULTICLASS, "probability for Id 1462 is outside [0, 1]")


@pytest.mark.parametrize("row, total", [([0.5, 0.3, 0.1], "0.900000"), ([0.5, 0.5, 0.5], "1.500000"),
                                        ([0.2, 0.3, 0.5 + 2e-4], "1.000200")])
def test_class_probabilities_that_do_not_sum_to_1_are_refused(row, total):
    rows = [*GOOD_ROWS[:2], row, GOOD_ROWS[3]]
    refused(per_class(rows), MULTICLASS, "class probabilities for Id 1463", f"sum to {total}, not 1")


def test_probability_columns_must_be_the_classes_in_order():
    frame = per_class(GOOD_ROWS)[["Id", "dog", "cat", "emu"]]
    refused(frame, MULTICLASS, "header is Id,dog,cat,emu", "expected exactly Id,cat,dog,emu")
    refused(per_class(GOOD_ROWS).drop(columns="emu"), MULTICLASS, "expected exactly Id,cat,dog,emu")


def test_a_missing_probability_is_not_finite():
    refused(per_class([GOOD_ROWS[0], [0.2, math.nan, 0.8], *GOOD_ROWS[2:]]), MULTICLASS, "1 predictions are not finite",
            "Id 1462")
    refused(p_positive([0.1, 0.2, 0.3, math.inf]), BINARY, "not finite", "Id 1464")


# ----------------------------------------------------------------------------- writing


@pytest.mark.parametrize("frame, checks", [
    (prices(columns=("Id", "Price")), REGRESSION),
    (prices(IDS[:3], [1.0, 2.0, 3.0]), REGRESSION),
    (prices([1461, 1461, 1463, 1464]), REGRESSION),
    (prices(IDS[::-1]), REGRESSION),
    (prices(values=[1.0, math.nan, 2.0, 3.0]), REGRESSION),
    (prices(values=[1.0, math.inf, 2.0, 3.0]), REGRESSION),
    (prices(values=[1.0, -1.0, 2.0, 3.0]), REGRESSION),
    (pd.DataFrame({"Id": IDS, "Label": ["dog", "cat", "wolf", "dog"]}), CLASSIFICATION),
    (p_positive([0.5, 1.5, 0.5, 0.5]), BINARY),
    (per_class([[0.5, 0.3, 0.1]] * 4), MULTICLASS),
], ids=["header", "rows", "duplicate", "order", "nan", "inf", "negative", "class", "probability", "sum"])
def test_failing_check_writes_nothing(tmp_path, frame, checks):
    fresh = tmp_path / "fresh" / "submission.csv"
    with pytest.raises(DataError):
        write_submission(fresh, frame, **checks)
    assert not fresh.exists()

    existing = tmp_path / "existing.csv"
    existing.write_bytes(b"Id,SalePrice\n1461,1.0\n")
    with pytest.raises(DataError):
        write_submission(existing, frame, **checks)
    assert existing.read_bytes() == b"Id,SalePrice\n1461,1.0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.csv"], "no temporary file is left behind"


def test_success_writes_exactly_header_and_rows(tmp_path):
    path = tmp_path / "submissions" / "house.csv"
    assert write_submission(path, prices(), **REGRESSION) == path
    assert path.read_text().splitlines() == [
        "Id,SalePrice", "1461,120000.0", "1462,135000.5", "1463,99000.0", "1464,250000.25"]
    assert [p.name for p in path.parent.iterdir()] == ["house.csv"]


def test_success_replaces_an_old_submission(tmp_path):
    path = tmp_path / "house.csv"
    path.write_text("stale\n")
    write_submission(path, pd.DataFrame({"Id": IDS, "Label": ["emu", "cat", "dog", "dog"]}), **CLASSIFICATION)
    assert path.read_text().splitlines() == ["Id,Label", "1461,emu", "1462,cat", "1463,dog", "1464,dog"]


# ----------------------------------------------------------------------------- several rows per id (issue 30)

RANKED = dict(id_column="Id", label_column="Label", expected_ids=IDS[:2], classes=CLASSES, rows_per_id=3)


def ranked(ids=(1461, 1461, 1461, 1462, 1462, 1462), labels=("dog", "cat", "emu", "emu", "dog", "cat")):
    return pd.DataFrame({"Id": list(ids), "Label": list(labels)})


def test_a_ranked_list_of_each_ids_classes_passes():
    check_submission(ranked(), **RANKED)


@pytest.mark.parametrize("rows", [5, 7])
def test_a_ranked_list_has_ids_times_rows_per_id_rows(rows):
    frame = ranked([1461] * 3 + [1462] * (rows - 3), (["dog", "cat", "emu"] * 3)[:rows])
    refused(frame, RANKED, f"submission has {rows} rows; the test set has 2 ids x 3 rows = 6")


def test_an_id_more_often_than_its_rows_is_refused():
    refused(ranked([1461] * 4 + [1462] * 2), RANKED, "repeats Id 1461 more than 3 times")


@pytest.mark.parametrize("ids", [[1461, 1462, 1461, 1462, 1461, 1462], [1462] * 3 + [1461] * 3, [1461] * 3 + [9] * 3])
def test_each_ids_rows_together_in_the_test_files_order(ids):
    refused(ranked(ids), RANKED, "Ids differ from the test file's, each 3 times in a row, in its order")


def test_a_ranked_list_holds_known_classes_each_once_per_id():
    refused(ranked(labels=("dog", "cat", "emu", "emu", "wolf", "cat")), RANKED, "Label 'wolf' is not a known class")
    refused(ranked(labels=("dog", "cat", "emu", "emu", "dog", "emu")), RANKED,
            "ranks Label 'emu' twice for Id 1462", "3 classes must be distinct")


def test_the_ranked_kind_writes_each_ids_best_classes_first():
    frame, checks = Ranked(2).frame({"Id": ["b", "a"]}, "Label", np.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]]),
                                    CLASSES, METRICS["accuracy"])
    assert frame.to_dict("list") == {"Id": ["b", "b", "a", "a"], "Label": ["dog", "emu", "cat", "dog"]}  # ties: first
    assert checks == dict(label_column="Label", classes=CLASSES, rows_per_id=2)
    check_submission(frame, id_column="Id", expected_ids=["b", "a"], **checks)
    two, _ = Ranked(3).frame({"Id": [7]}, "Label", np.array([[0.9, 0.1]]), ["no", "yes"], METRICS["accuracy"])
    assert two.to_dict("list") == {"Id": [7, 7], "Label": ["no", "yes"]}  # all the classes there are, ranked


def test_a_sample_of_several_rows_per_id_is_followed():
    frame, checks = ranked(), dict(RANKED)
    sample = pd.DataFrame({"Id": [1462] * 3 + [1461] * 3, "Label": "x"})  # its own id order
    out, checks = like_sample(frame, checks, sample, "sample.csv")
    assert out.to_dict("list") == {"Id": [1462] * 3 + [1461] * 3, "Label": ["emu", "dog", "cat", "dog", "cat", "emu"]}
    assert checks["expected_ids"] == [1462, 1461] and checks["label_column"] == "Label"
    check_submission(out, **checks)


@pytest.mark.parametrize("ids, needle", [
    ([1461, 1462] * 3, "sample.csv: Id '1461' is not 3 times in a row; this target's metric submits 3 rows per id"),
    ([1461] * 3, "sample.csv: its 3 rows are not the test file's 2 ids x 3 rows"),
    ([1461] * 3 + [9] * 3, "sample.csv: its 6 rows are not the test file's 2 ids x 3 rows (Id '9' is not a test id)"),
])
def test_a_sample_not_of_this_many_rows_per_id_is_one_line(ids, needle):
    with pytest.raises(DataError) as caught:
        like_sample(ranked(), dict(RANKED), pd.DataFrame({"Id": ids, "Label": "x"}), "sample.csv")
    assert str(caught.value).startswith(needle) and "\n" not in str(caught.value)
