"""`spellfix report`: reading run logs, the summary table, and the rendered figure."""

import json

import pytest

from spellfix.telemetry import RunLogger
from spellfix.telemetry.report import RunSummary, load_run, markdown_table, render_figure, summarize, write_report
from spellfix.telemetry.runlog import read_jsonl, resolve_logdir

T0 = 1_700_000_000.0


def write_run(run_dir, *, gpus=2, util=50.0, samples_per_s=100.0, wait=0.2, rows=12, with_samples=True):
    """A training output dir with logs/metrics.jsonl (+ device.jsonl) as RunLogger writes them."""
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    with open(logs / "metrics.jsonl", "w") as f:
        for k in range(1, rows + 1):
            row = {"step": 10 * k, "time": T0 + 30 * k, "loss": 5.0 / k, "lr": 1e-4,
                   "samples_per_s": samples_per_s, "tokens_per_s": 20 * samples_per_s,
                   "step_time_s": 32 / samples_per_s, "data_wait_share": wait, "mfu": 0.1}
            row.update({f"gpu/{g}/util": util for g in range(gpus)})
            if k % 4 == 0:
                row["eval/loss"] = 6.0 / k
                row["eval/exact_match"] = 0.1 * k
            f.write(json.dumps(row) + "\n")
    if with_samples:
        with open(logs / "device.jsonl", "w") as f:
            for s in range(30 * rows):
                for g in range(gpus):
                    f.write(json.dumps({"device": "gpu", "index": g, "time": T0 + s,
                                        "util": util + (10 if s % 2 else -10)}) + "\n")
    return run_dir


def test_summary_pools_device_samples_and_weights_rates_by_training_time(tmp_path):
    run = load_run(write_run(tmp_path / "base", gpus=8, util=35.0, wait=0.5))
    s = summarize(run)
    assert s.label == "base" and s.device == "GPU x8"
    assert s.util_mean == pytest.approx(35.0) and s.util_median in (25.0, 45.0, 35.0)
    assert s.samples_per_s == pytest.approx(100.0) and s.data_wait_share == pytest.approx(0.5)
    assert s.final_loss == pytest.approx(5.0 / 12) and s.eval_exact_match == pytest.approx(1.2)
    assert s.duration_s == pytest.approx(360.0)


def test_window_weighting_turns_per_window_rates_into_a_run_rate(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    rows = [  # 10 steps at 1 s/step (10 samples/s), then 10 steps at 0.25 s/step (40 samples/s)
        {"step": 10, "time": T0 + 10, "samples_per_s": 10.0, "step_time_s": 1.0},
        {"step": 20, "time": T0 + 12.5, "samples_per_s": 40.0, "step_time_s": 0.25},
    ]
    (logs / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # total: 200 samples in 12.5 s = 16 samples/s (a plain mean would say 25)
    assert summarize(load_run(tmp_path)).samples_per_s == pytest.approx(16.0)


def test_summary_falls_back_to_metrics_rows_without_device_jsonl(tmp_path):
    run = load_run(write_run(tmp_path / "old", gpus=2, util=70.0, with_samples=False))
    assert run.samples == []
    assert summarize(run).util_mean == pytest.approx(70.0)
    assert set(run.device_series()) == {"gpu 0", "gpu 1"}


def test_markdown_table_reports_speedup_against_the_first_run(tmp_path):
    base = summarize(load_run(write_run(tmp_path / "baseline", samples_per_s=25.0)))
    tuned = summarize(load_run(write_run(tmp_path / "tuned", samples_per_s=100.0)))
    table = markdown_table([base, tuned])
    lines = table.splitlines()
    assert lines[0].startswith("| run | device | util mean |")
    assert "| baseline |" in lines[2] and "1.00×" in lines[2]
    assert "| tuned |" in lines[3] and "4.00×" in lines[3]


def test_write_report_renders_png_with_expected_panels_and_markdown(tmp_path):
    base = write_run(tmp_path / "baseline", gpus=8, util=35.0, samples_per_s=25.0, wait=0.6)
    tuned = write_run(tmp_path / "tuned", gpus=8, util=89.0, samples_per_s=100.0, wait=0.03)
    output = tmp_path / "out" / "report.png"
    table = write_report([base, tuned / "logs"], output)
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = output.with_suffix(".md").read_text()
    assert table in md and "| tuned |" in table and "4.00×" in table

    runs = [load_run(base), load_run(tuned)]
    fig = render_figure(runs, [summarize(r) for r in runs], tmp_path / "again.png")
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert sum(t.startswith("baseline") for t in titles) == 1 and sum(t.startswith("tuned") for t in titles) == 1
    assert titles.count("throughput and data-loader wait") == 2 and titles.count("loss") == 2
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert len(heatmaps) == 2  # utilization per device over time, one per run
    assert [t.get_text() for t in heatmaps[0].get_yticklabels()] == [f"gpu {i}" for i in range(8)]
    assert sum(1 for ax in fig.axes if ax.tables) == 1  # the summary table


def test_report_of_a_real_cpu_run_written_by_run_logger(tmp_path):
    run_dir = tmp_path / "cpu-run"
    with RunLogger(run_dir / "logs", sample_interval_s=60, device_source="cpu", stdout=False) as logger:
        for step in range(1, 6):
            logger.sampler.sample_once()
            logger.log(step, {"loss": 3.0 / step, "samples_per_s": 50.0, "step_time_s": 0.1,
                              "data_wait_share": 0.1})
    table = write_report([run_dir], tmp_path / "cpu.png", labels=["quickstart"])
    assert "| quickstart | CPU (job " in table  # system-wide CPU % plus this job's own share
    runs = [load_run(run_dir)]
    fig = render_figure(runs, [summarize(runs[0])], tmp_path / "cpu2.png")
    (util_ax,) = [ax for ax in fig.axes if ax.get_ylabel() == "CPU utilization (%)"]
    labels = [line.get_label() for line in util_ax.get_lines()]
    assert "cpu" in labels and "this process (% of all cores)" in labels


def test_missing_logs_and_bad_lines_are_reported_with_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        resolve_logdir(tmp_path)
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not valid JSON"):
        read_jsonl(bad)
    bad.write_text('{"step": 1}\n{"step": 2, "lo')  # torn last line of an interrupted run
    assert read_jsonl(bad) == [{"step": 1}]
    with pytest.raises(ValueError, match="2 labels for 1 logdirs"):
        write_report([tmp_path], tmp_path / "r.png", labels=["a", "b"])


def test_runs_with_the_same_directory_name_get_distinct_labels(tmp_path):
    a = write_run(tmp_path / "exp1" / "run")
    b = write_run(tmp_path / "exp2" / "run")
    table = write_report([a, b], tmp_path / "r.png")
    assert "| exp1/run |" in table and "| exp2/run |" in table


def test_summary_of_a_run_without_throughput_or_devices_shows_dashes():
    s = RunSummary("x", "-", None, None, None, None, None, None, None, None, None)
    assert markdown_table([s]).splitlines()[2].count("–") >= 9
