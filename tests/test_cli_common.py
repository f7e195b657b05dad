"""The pieces every subcommand shares: argument types, --json output and text tables."""

import argparse
import json

import numpy as np
import pytest

from robustlab.cli import main
from robustlab.cli.common import emit, format_table, int_list, non_negative_number, positive_int


def test_argument_types_accept_good_values():
    assert non_negative_number("36/255") == 36 / 255 and non_negative_number("0.5") == 0.5
    assert int_list("48,97, 195") == [48, 97, 195]
    assert positive_int("7") == 7


@pytest.mark.parametrize(
    "kind, text, message",
    [
        (non_negative_number, "-1", "non-negative"),
        (non_negative_number, "1/0", "such as 0.125"),
        (int_list, "4,x", "comma-separated integers"),
        (positive_int, "0", "positive integer, got '0'"),
        (positive_int, "-5", "positive integer, got '-5'"),
        (positive_int, "2.5", "positive integer, got '2.5'"),
    ],
)
def test_argument_types_refuse_bad_values_with_a_message(kind, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        kind(text)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["certify", "RUN", "--limit", "-5"], "argument --limit: expected a positive integer, got '-5'"),
        (["certify", "RUN", "--batch-size", "0"], "argument --batch-size: expected a positive integer"),
        (["smooth", "RUN", "--n", "0"], "argument --n: expected a positive integer"),
    ],
)
def test_bad_counts_fail_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_emit_prints_json_with_arrays_or_the_rendered_text(capsys):
    data = {"counts": np.array([1, 2]), "accuracy": np.float64(0.5)}
    emit(argparse.Namespace(json=True), data, lambda d: "text")
    assert json.loads(capsys.readouterr().out) == {"counts": [1, 2], "accuracy": 0.5}
    emit(argparse.Namespace(json=False), data, lambda d: f"accuracy {d['accuracy']}")
    assert capsys.readouterr().out == "accuracy 0.5\n"


def test_format_table_aligns_numbers_right_and_words_left():
    table = format_table([{"model": "mlp", "cra": 0.5}, {"model": "convnet", "cra": 0.8125}, {"model": "x"}])
    assert table.splitlines() == ["model       cra", "-------  ------", "mlp      0.5000", "convnet  0.8125", "x"]
    assert format_table([]) == "(no rows)"


def test_format_table_gives_each_column_the_decimals_it_needs():
    rows = [{"epochs": 20.0, "seconds": 4.1, "cra": 0.933333, "lr": 0.1}, {"epochs": 10.0, "seconds": 12.0, "cra": 0.5}]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["epochs", "seconds", "cra", "lr"]
    assert lines[2].split() == ["20", "4.1", "0.9333", "0.1"] and lines[3].split() == ["10", "12.0", "0.5000"]


def test_markdown_tables_give_each_column_the_decimals_it_needs():
    from robustlab.report.tables import markdown_table

    table = markdown_table([{"epochs": 20.0, "seconds": 4.1, "accuracy": 93.333}, {"epochs": 5.0, "seconds": 2.0}])
    assert table.splitlines()[2:] == ["| 20 | 4.1 | 93.33 |", "| 5 | 2.0 |  |"]


def test_progress_lines_show_config_values_for_people():
    from robustlab.progress import readable

    assert readable("data.subset_size", None) == "all" and readable("train.epochs", 1.9591002044989776) == "1.959"
    assert readable("seed", 2) == "2" and readable("optim.lr", 0.1) == "0.1"


def test_the_demo_prints_the_test_columns_and_says_where_the_others_are():
    from robustlab.cli.demo import render_demo

    data = {
        "title": "Accuracy and CRA vs training-set size (digits)",
        "columns": ["model", "N", "accuracy", "CRA 36/255", "train accuracy", "train CRA 36/255"],
        "rows": [{"model": "mlp", "N": 48, "accuracy": 80.0, "CRA 36/255": 68.0, "train accuracy": 100.0}],
        "notes": [],
        "figures": ["out/demo.png"],
        "tables": {"json": "out/table.json", "text": "out/table.md"},
    }
    text = render_demo(data)
    assert "train accuracy" not in text and "CRA 36/255" in text.splitlines()[1]
    assert text.endswith("(the 2 columns on the training images are in out/table.md)")
