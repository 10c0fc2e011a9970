"""RunLogger: rows to metrics.jsonl, TensorBoard and stdout, with the real CPU sampler."""

import io
import json
import math
import threading

import pytest

from spellfix.telemetry import RunLogger, parse_log_line


def _thread_names() -> set[str]:
    return {t.name for t in threading.enumerate()}


def _read_tensorboard_scalars(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return acc


def test_log_writes_the_same_row_to_jsonl_tensorboard_and_stdout(tmp_path):
    out = io.StringIO()
    with RunLogger(tmp_path, sample_interval_s=0.05, device_source="cpu", stream=out) as logger:
        logger.sampler.sample_once()  # a reading is there regardless of thread timing
        row = logger.log(10, {"loss": 2.5, "lr": 3e-4, "samples_per_s": 100.0})
        logger.log(20, {"loss": 2.0, "lr": 3e-4, "samples_per_s": 120.0})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20]
    assert rows[0] == pytest.approx(row)
    assert {"time", "loss", "lr", "samples_per_s", "cpu/util", "cpu/rss_gb"} <= set(rows[0])
    assert rows[0]["cpu/rss_gb"] > 0

    printed = [parse_log_line(line) for line in out.getvalue().splitlines()]
    assert printed[1]["step"] == 20 and printed[1]["loss"] == 2.0 and "cpu/util" in printed[1]

    acc = _read_tensorboard_scalars(tmp_path)
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "lr", "throughput/samples_per_s", "cpu/util", "cpu/rss_gb"} <= tags
    assert [e.value for e in acc.Scalars("throughput/samples_per_s")] == [100.0, 120.0]
    assert [e.step for e in acc.Scalars("loss")] == [10, 20]


def test_device_samples_are_kept_raw_in_device_jsonl(tmp_path):
    with RunLogger(tmp_path, sample_interval_s=60, device_source="cpu", tensorboard=False, stdout=False) as logger:
        for _ in range(3):
            logger.sampler.sample_once()
        logger.log(1, {"loss": 1.0})
    samples = [json.loads(line) for line in (tmp_path / "device.jsonl").read_text().splitlines()]
    assert len(samples) == 3
    assert all(s["device"] == "cpu" and s["mem_used_gb"] > 0 for s in samples)


def test_text_goes_to_tensorboard(tmp_path):
    with RunLogger(tmp_path, sample_interval_s=None, stdout=False) as logger:
        logger.log_text("recipe", "train:\n  lr: 0.0003")
    acc = _read_tensorboard_scalars(tmp_path)
    assert "recipe" in acc.Tags()["tensors"]


def test_disabled_logger_starts_no_thread_and_writes_nothing(tmp_path):
    before = _thread_names()
    logger = RunLogger(tmp_path / "logs", enabled=False)
    row = logger.log(3, {"loss": 1.0})
    logger.log_text("recipe", "x")
    logger.close()
    assert row["step"] == 3 and row["loss"] == 1.0
    assert not (tmp_path / "logs").exists()
    assert "spellfix-telemetry" not in _thread_names() - before


def test_close_stops_the_sampler_thread_and_is_idempotent(tmp_path):
    logger = RunLogger(tmp_path, sample_interval_s=0.01, device_source="cpu", stdout=False)
    assert any(t.name == "spellfix-telemetry" for t in threading.enumerate())
    logger.close()
    logger.close()
    assert not any(t.name == "spellfix-telemetry" and t.is_alive() for t in threading.enumerate())


def test_non_finite_values_become_null_in_jsonl_and_nan_on_stdout(tmp_path):
    out = io.StringIO()
    with RunLogger(tmp_path, sample_interval_s=None, tensorboard=False, stream=out) as logger:
        logger.log(1, {"loss": math.nan})
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["loss"] is None
    assert "loss=nan" in out.getvalue()


def test_caller_metrics_win_over_sampler_keys_and_bad_keys_are_refused(tmp_path):
    with RunLogger(tmp_path, sample_interval_s=60, device_source="cpu", tensorboard=False, stdout=False) as logger:
        logger.sampler.sample_once()
        row = logger.log(1, {"cpu/util": -1.0})
        assert row["cpu/util"] == -1.0
        with pytest.raises(ValueError, match="'eval loss'"):
            logger.log(2, {"eval loss": 1.0})


def test_numpy_and_torch_scalars_are_logged_as_numbers(tmp_path):
    import numpy as np
    import torch

    with RunLogger(tmp_path, sample_interval_s=None, tensorboard=False, stdout=False) as logger:
        row = logger.log(1, {"a": np.float32(0.5), "b": torch.tensor(2.0)})
    assert row["a"] == 0.5 and row["b"] == 2.0
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["b"] == 2.0


def test_background_thread_samples_on_its_own_and_rows_carry_its_readings(tmp_path):
    import time

    with RunLogger(tmp_path, sample_interval_s=0.01, device_source="cpu", tensorboard=False, stdout=False) as logger:
        deadline = time.monotonic() + 30
        while logger.sampler.sample_count < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        row = logger.log(1, {"loss": 1.0})
    assert logger.sampler.sample_count >= 3
    assert 0.0 <= row["cpu/util"] <= 100.0 and row["cpu/rss_gb"] > 0
    assert len((tmp_path / "device.jsonl").read_text().splitlines()) >= 3
