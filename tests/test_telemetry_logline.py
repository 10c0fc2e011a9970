"""The stdout log line and the SageMaker metric regexes that read it."""

import re

import pytest

from spellfix.telemetry import METRIC_DEFINITIONS, format_log_line, parse_log_line
from spellfix.telemetry.logline import metric_regex

ROW = {
    "loss": 2.3456789,
    "lr": 4e-4,
    "samples_per_s": 1234.5678,
    "tokens_per_s": 98765.4321,
    "step_time_s": 0.0123,
    "data_wait_share": 0.05,
    "mfu": 0.41,
    "eval/loss": 1.5,
    "eval/exact_match": 0.875,
    "eval/false_positive_rate": 0.0125,
    "cpu/util": 97.0,
    **{f"gpu/{i}/util": 80.0 + i for i in range(8)},
    **{f"gpu/{i}/mem_used_gb": 10.5 + i for i in range(8)},
}


def test_log_line_has_fixed_prefix_step_and_6g_floats_without_spaces_in_pairs():
    line = format_log_line(120, {"loss": 2.3456789, "lr": 4e-4, "time": 1.7e9, "gpu/0/util": 87.0, "n": 3})
    assert line == "spellfix: step=120 loss=2.34568 lr=0.0004 gpu/0/util=87 n=3"


def test_every_metric_definition_extracts_its_value_from_a_printed_line():
    line = format_log_line(7, ROW)
    for definition in METRIC_DEFINITIONS:
        match = re.search(definition["Regex"], line)
        assert match, definition
        key = re.sub(r"^.* ", "", definition["Regex"]).split("=")[0].replace("\\", "")
        assert float(match.group(1)) == pytest.approx(float(format(ROW[key], ".6g")))


def test_definitions_cover_the_metrics_sagemaker_charts_and_stay_within_its_limit():
    names = {d["Name"] for d in METRIC_DEFINITIONS}
    for required in ["train:loss", "train:learning_rate", "train:samples_per_s", "train:tokens_per_s",
                     "eval:exact_match", "eval:false_positive_rate", *[f"gpu{i}:util" for i in range(8)]]:
        assert required in names
    assert len(METRIC_DEFINITIONS) <= 40
    assert all(set(d) == {"Name", "Regex"} and len(d["Name"]) <= 255 for d in METRIC_DEFINITIONS)


def test_loss_regex_does_not_pick_up_eval_loss_or_foreign_loss_lines():
    loss = metric_regex("loss")
    assert re.search(loss, format_log_line(1, {"eval/loss": 9.0})) is None
    assert re.search(loss, "{'loss': 2.1, 'grad_norm': 1.0} loss=2.1") is None
    assert re.search(loss, format_log_line(1, {"eval/loss": 9.0, "loss": 3.0})).group(1) == "3"


def test_regexes_read_exponent_and_negative_values():
    line = format_log_line(3, {"lr": 1e-05, "loss": -0.5, "tokens_per_s": 1234567.0})
    values = {d["Name"]: re.search(d["Regex"], line) for d in METRIC_DEFINITIONS}
    assert float(values["train:learning_rate"].group(1)) == 1e-05
    assert float(values["train:loss"].group(1)) == -0.5
    assert float(values["train:tokens_per_s"].group(1)) == pytest.approx(1.23457e06)


def test_keys_that_would_break_the_line_are_rejected_with_the_key_named():
    with pytest.raises(ValueError, match="'bad key'"):
        format_log_line(1, {"bad key": 1.0})
    with pytest.raises(ValueError, match="a=b"):
        format_log_line(1, {"a=b": 1.0})
    with pytest.raises(ValueError, match="not a number"):
        format_log_line(1, {"loss": "high"})


def test_parse_log_line_round_trips_and_ignores_other_lines():
    parsed = parse_log_line(format_log_line(5, {"loss": 0.25, "gpu/1/util": 50.0}))
    assert parsed == {"step": 5, "loss": 0.25, "gpu/1/util": 50.0}
    assert parse_log_line("Epoch 1: loss=0.3") is None


def test_documented_regex_table_is_the_one_the_code_ships():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "telemetry.md").read_text()
    for definition in METRIC_DEFINITIONS:
        assert f"| `{definition['Name']}` | `{definition['Regex']}` |" in doc
