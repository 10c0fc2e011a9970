"""``spellfix report``: one figure and one table that show how well a run used its hardware.

For each run (a column; ``--compare`` adds columns side by side, e.g. the baseline recipe next to
the tuned one) the figure shows device utilization over time, throughput with the share of time
spent waiting for data, and the loss; below, a summary table. The same table is returned as
markdown and written next to the PNG. Rows of a panel share their y-axis across runs so that the
before/after difference is visible at a glance.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .runlog import RunLog, load_run

# Colors: a muted palette with one strong accent per quantity.
if TYPE_CHECKING:
    from matplotlib.figure import Figure

_UTIL_MEAN = "#1f3b73"
_THROUGHPUT = "#2a9d8f"
_WAIT = "#e76f51"
_LOSS = "#6d597a"
_EVAL = "#e9a23b"
_DEVICE_CMAP = "tab10"


@dataclass(frozen=True)
class RunSummary:
    """Headline figures of one run (None where the run did not log the inputs)."""

    label: str
    device: str  # "GPU x8", "CPU", or "-"
    util_mean: float | None  # percent, all samples of all devices pooled
    util_median: float | None
    data_wait_share: float | None  # 0..1, time-weighted
    samples_per_s: float | None  # time-weighted mean = samples / training time
    tokens_per_s: float | None
    mfu: float | None  # 0..1
    final_loss: float | None
    eval_exact_match: float | None  # last logged value
    duration_s: float | None
    job_cpu_util: float | None = None  # CPU runs: this process's share of all cores, percent

    @property
    def device_label(self) -> str:
        """``GPU x8``, ``CPU``, or ``CPU (job 15%)`` when the job's own CPU share is known."""
        return self.device if self.job_cpu_util is None else f"{self.device} (job {self.job_cpu_util:.0f}%)"


def _weights(run: RunLog, key: str) -> tuple[list[float], list[float]]:
    """Values of *key* with the training time of the window each one averages over.

    A row's window lasts ``step_time_s × (steps since the previous row)``: weighting by it turns
    per-window rates into run-level rates (total samples / total time) without counting eval
    pauses. Rows without ``step_time_s`` get equal weight.
    """
    values, weights = [], []
    previous_step: int | None = None
    deltas = [b["step"] - a["step"] for a, b in zip(run.rows, run.rows[1:]) if b.get("step", 0) > a.get("step", 0)]
    typical = statistics.median(deltas) if deltas else 1
    for row in run.rows:
        value = row.get(key)
        step = int(row.get("step", 0))
        delta = typical if previous_step is None or step <= previous_step else step - previous_step
        previous_step = step
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            continue
        step_time = row.get("step_time_s")
        weight = step_time * delta if isinstance(step_time, (int, float)) and step_time > 0 else 1.0
        values.append(float(value))
        weights.append(float(weight))
    return values, weights


def _weighted_mean(run: RunLog, key: str) -> float | None:
    values, weights = _weights(run, key)
    total = sum(weights)
    return sum(v * w for v, w in zip(values, weights)) / total if total > 0 else None


def _last(run: RunLog, key: str) -> float | None:
    _, values, _ = run.series(key)
    finite = [v for v in values if math.isfinite(v)]
    return finite[-1] if finite else None


def summarize(run: RunLog) -> RunSummary:
    """Compute the :class:`RunSummary` of one run."""
    devices = run.device_series()
    utils = [u for _, values in devices.values() for u in values]
    gpus = [name for name in devices if name.startswith("gpu")]
    device = f"GPU x{len(gpus)}" if gpus else ("CPU" if devices else "-")
    # On a shared machine system-wide CPU % says little about this job: keep its own share too.
    _, process_util = run.process_cpu_series() if not gpus else ([], [])
    times = [r["time"] for r in run.rows if isinstance(r.get("time"), (int, float))]
    return RunSummary(
        label=run.label,
        device=device,
        util_mean=statistics.fmean(utils) if utils else None,
        util_median=statistics.median(utils) if utils else None,
        data_wait_share=_weighted_mean(run, "data_wait_share"),
        samples_per_s=_weighted_mean(run, "samples_per_s"),
        tokens_per_s=_weighted_mean(run, "tokens_per_s"),
        mfu=_weighted_mean(run, "mfu"),
        final_loss=_last(run, "loss"),
        eval_exact_match=_last(run, "eval/exact_match"),
        duration_s=(max(times) - run.start_time) if times else None,
        job_cpu_util=statistics.fmean(process_util) if process_util else None,
    )


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "pct":
        return f"{value:.1f}%"
    if kind == "share":
        return f"{100 * value:.1f}%"
    if kind == "rate":
        return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"
    if kind == "duration":
        if value < 120:
            return f"{value:.0f} s"
        minutes = value / 60
        return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"
    return f"{value:.4g}"


TABLE_COLUMNS = (
    "run", "device", "util mean", "util median", "data wait", "samples/s", "speed-up",
    "tokens/s", "MFU", "final loss", "eval EM", "duration",
)


def summary_rows(summaries: Sequence[RunSummary]) -> list[list[str]]:
    """Table cells, one row per run; speed-up is samples/s relative to the first run."""
    base = summaries[0].samples_per_s if summaries else None
    rows = []
    for s in summaries:
        speedup = (s.samples_per_s / base) if (s.samples_per_s and base) else None
        rows.append([
            s.label, s.device_label, _fmt(s.util_mean, "pct"), _fmt(s.util_median, "pct"),
            _fmt(s.data_wait_share, "share"), _fmt(s.samples_per_s, "rate"),
            f"{speedup:.2f}×" if speedup is not None else "–", _fmt(s.tokens_per_s, "rate"),
            _fmt(s.mfu, "share"), _fmt(s.final_loss, "num"), _fmt(s.eval_exact_match, "share"),
            _fmt(s.duration_s, "duration"),
        ])
    return rows


def markdown_table(summaries: Sequence[RunSummary]) -> str:
    """The summary as a GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in summary_rows(summaries)]
    return "\n".join(lines) + "\n"


def _time_axis(run: RunLog) -> tuple[float, str]:
    """Divisor and unit for elapsed time: seconds up to 2 min, minutes up to 3 h, then hours."""
    end = max([r["time"] for r in run.rows if isinstance(r.get("time"), (int, float))] +
              [s["time"] for s in run.samples if isinstance(s.get("time"), (int, float))], default=0.0)
    duration = end - run.start_time
    if duration > 3 * 3600:
        return 3600.0, "h"
    return (60.0, "min") if duration > 120 else (1.0, "s")


def _binned(times: list[float], values: list[float], start: float, scale: float, bins: int = 240
            ) -> tuple[list[float], list[float]]:
    """Mean per time bin: 1-second NVML samples over hours are unreadable raw."""
    if len(times) <= bins:
        return [(t - start) / scale for t in times], list(values)
    lo, hi = min(times), max(times)
    width = (hi - lo) / bins or 1.0
    sums = [0.0] * bins
    counts = [0] * bins
    for t, v in zip(times, values):
        i = min(int((t - lo) / width), bins - 1)
        sums[i] += v
        counts[i] += 1
    xs = [((lo + (i + 0.5) * width) - start) / scale for i in range(bins) if counts[i]]
    ys = [sums[i] / counts[i] for i in range(bins) if counts[i]]
    return xs, ys


def _style_axis(ax) -> None:  # noqa: ANN001 - matplotlib Axes
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=9, colors="#444444")


def _binned_matrix(devices: dict[str, tuple[list[float], list[float]]], names: list[str], start: float,
                   end: float, bins: int = 200) -> list[list[float]]:
    """devices × time-bins matrix of mean utilization (NaN where a bin has no sample)."""
    width = (end - start) / bins or 1.0
    matrix = []
    for name in names:
        sums = [0.0] * bins
        counts = [0] * bins
        for t, v in zip(*devices[name]):
            i = min(max(int((t - start) / width), 0), bins - 1)
            sums[i] += v
            counts[i] += 1
        matrix.append([sums[i] / counts[i] if counts[i] else math.nan for i in range(bins)])
    return matrix


def _plot_utilization(ax, run: RunLog, summary: RunSummary) -> None:  # noqa: ANN001
    """Lines for one or two devices; a device × time heatmap for more (8 GPUs as lines are a
    hairball, as a heatmap a straggler or an idle GPU stands out at once)."""
    import matplotlib

    start = run.start_time
    scale, unit = _time_axis(run)
    devices = run.device_series()
    gpu_names = [n for n in devices if n.startswith("gpu")]
    names = gpu_names or list(devices)
    ax.set_xlabel(f"elapsed ({unit})")
    if not names:
        ax.text(0.5, 0.5, "no device samples logged", ha="center", va="center", transform=ax.transAxes,
                color="#888888")
        ax.set_ylabel("utilization (%)")
        return
    if len(names) >= 3:
        end = max(t for name in names for t in devices[name][0])
        matrix = _binned_matrix(devices, names, start, end)
        image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0, vmax=100, interpolation="nearest",
                          extent=(0, (end - start) / scale, len(names) - 0.5, -0.5))
        ax.set_yticks(range(len(names)), names)
        ax.grid(False)
        bar = ax.figure.colorbar(image, ax=ax, fraction=0.045, pad=0.02)
        bar.set_label("utilization (%)", fontsize=9)
        bar.ax.tick_params(labelsize=8)
        if summary.util_mean is not None:
            bar.ax.axhline(summary.util_mean, color="white", linewidth=2)
            bar.ax.axhline(summary.util_mean, color=_UTIL_MEAN, linewidth=1, linestyle="--")
        return
    cmap = matplotlib.colormaps[_DEVICE_CMAP]
    for i, name in enumerate(names):
        xs, ys = _binned(*devices[name], start, scale)
        ax.plot(xs, ys, color=_UTIL_MEAN if len(names) == 1 else cmap(i), linewidth=1.2, label=name)
    if not gpu_names:
        ptimes, pvalues = run.process_cpu_series()
        if pvalues:
            xs, ys = _binned(ptimes, pvalues, start, scale)
            ax.plot(xs, ys, color=_THROUGHPUT, linewidth=1.2, label="this process (% of all cores)")
    if summary.util_mean is not None:
        ax.axhline(summary.util_mean, color=_WAIT, linestyle="--", linewidth=1.2,
                   label=f"mean {summary.util_mean:.0f}%")
    ax.set_ylim(0, 105)
    ax.set_ylabel("CPU utilization (%)" if not gpu_names else "GPU utilization (%)")
    ax.legend(loc="best", fontsize=8, ncol=len(names) + 2, frameon=True, framealpha=0.85)


def _plot_throughput(ax, run: RunLog) -> tuple[object, float | None]:  # noqa: ANN001
    start = run.start_time
    scale, unit = _time_axis(run)
    times, values, _ = run.series("samples_per_s")
    xs = [(t - start) / scale for t in times]
    ax.plot(xs, values, color=_THROUGHPUT, linewidth=1.8, marker="o" if len(xs) < 30 else None,
            markersize=3, label="samples/s")
    ax.set_ylabel("samples / s", color=_THROUGHPUT)
    ax.set_xlabel(f"elapsed ({unit})")
    ax.set_ylim(bottom=0)
    wait_ax = ax.twinx()
    wtimes, waits, _ = run.series("data_wait_share")
    if waits:
        wx = [(t - start) / scale for t in wtimes]
        wait_ax.fill_between(wx, [100 * w for w in waits], color=_WAIT, alpha=0.18, linewidth=0)
        wait_ax.plot(wx, [100 * w for w in waits], color=_WAIT, linewidth=1.0, label="data wait %")
    wait_ax.set_ylim(0, 100)
    wait_ax.set_ylabel("waiting for data (% of step)", color=_WAIT)
    wait_ax.spines[["top"]].set_visible(False)
    wait_ax.tick_params(labelsize=9, colors="#444444")
    if not values:
        ax.text(0.5, 0.5, "no throughput logged", ha="center", va="center", transform=ax.transAxes,
                color="#888888")
    return wait_ax, max(values) if values else None


def _plot_loss(ax, run: RunLog) -> None:  # noqa: ANN001
    start = run.start_time
    scale, unit = _time_axis(run)
    times, values, _ = run.series("loss")
    ax.plot([(t - start) / scale for t in times], values, color=_LOSS, linewidth=1.6, label="train loss")
    etimes, evalues, _ = run.series("eval/loss")
    if evalues:
        ax.plot([(t - start) / scale for t in etimes], evalues, color=_EVAL, linewidth=0, marker="D",
                markersize=5, label="eval loss")
    ax.set_ylabel("loss")
    ax.set_xlabel(f"elapsed ({unit})")
    if values or evalues:
        ax.legend(loc="upper right", fontsize=8, frameon=True, framealpha=0.85)
    else:
        ax.text(0.5, 0.5, "no loss logged", ha="center", va="center", transform=ax.transAxes, color="#888888")


def render_figure(runs: Sequence[RunLog], summaries: Sequence[RunSummary], output: Path) -> Figure:
    """Draw and save the figure (columns = runs; rows = utilization, throughput, loss; table
    below). Returns the matplotlib Figure so callers and tests can inspect the panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = len(runs)
    fig = Figure(figsize=(max(11.0, 6.2 * ncols), 11.5), dpi=110, facecolor="white")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(4, ncols, height_ratios=[1, 1, 1, 0.16 + 0.07 * ncols], hspace=0.55, wspace=0.4,
                            left=0.075, right=0.92 if ncols == 1 else 0.95, top=0.9, bottom=0.03)
    util_axes, tput_axes, wait_axes, loss_axes = [], [], [], []
    for col, (run, summary) in enumerate(zip(runs, summaries)):
        util_ax = fig.add_subplot(grid[0, col])
        tput_ax = fig.add_subplot(grid[1, col])
        loss_ax = fig.add_subplot(grid[2, col])
        for ax in (util_ax, tput_ax, loss_ax):
            _style_axis(ax)
        _plot_utilization(util_ax, run, summary)
        wait_ax, _ = _plot_throughput(tput_ax, run)
        _plot_loss(loss_ax, run)
        util_ax.set_title(_column_title(summary), fontsize=12 if ncols == 1 else 11, fontweight="bold", loc="left", pad=22)
        util_ax.text(0, 1.02, "device utilization over time", transform=util_ax.transAxes, fontsize=10,
                     color="#333333", va="bottom")
        tput_ax.set_title("throughput and data-loader wait", fontsize=10, loc="left", color="#333333")
        loss_ax.set_title("loss", fontsize=10, loc="left", color="#333333")
        util_axes.append(util_ax)
        tput_axes.append(tput_ax)
        wait_axes.append(wait_ax)
        loss_axes.append(loss_ax)
    # Same y-scale across runs for throughput and loss: the comparison is the point.
    for axes in (tput_axes, loss_axes):
        lows, highs = zip(*(ax.get_ylim() for ax in axes))
        for ax in axes:
            ax.set_ylim(min(lows), max(highs))

    table_ax = fig.add_subplot(grid[3, :])
    table_ax.axis("off")
    table = table_ax.table(cellText=summary_rows(summaries), colLabels=list(TABLE_COLUMNS),
                           loc="upper center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.auto_set_column_width(list(range(len(TABLE_COLUMNS))))
    table.scale(1.0, 1.5)
    for (row, _), cell in table.get_celld().items():
        cell.set_edgecolor("#d0d0d0")
        if row == 0:
            cell.set_facecolor("#1f3b73")
            cell.set_text_props(color="white", fontweight="bold")
        elif row % 2 == 0:
            cell.set_facecolor("#f4f6fa")
    title = "spellfix training telemetry" + (" — side by side" if ncols > 1 else "")
    fig.suptitle(title, fontsize=15, fontweight="bold", x=0.07, ha="left", y=0.985)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format=output.suffix.lstrip(".") or "png", facecolor="white")
    os.replace(tmp, output)
    return fig


def _column_title(summary: RunSummary) -> str:
    parts = [summary.label]
    if summary.util_mean is not None:
        job = f" (job {summary.job_cpu_util:.0f}%)" if summary.job_cpu_util is not None else ""
        parts.append(f"{summary.device} at {summary.util_mean:.0f}%{job}")
    if summary.samples_per_s is not None:
        parts.append(f"{_fmt(summary.samples_per_s, 'rate')} samples/s")
    return " · ".join(parts)


def write_report(logdirs: list[Path], output: Path, labels: list[str] | None = None) -> str:
    """Render the telemetry report of one or more runs and return its markdown summary table.

    *logdirs*: training output dirs (with ``logs/metrics.jsonl``) or logs dirs; the first is the
    reference for the speed-up column. Writes *output* (PNG) and ``output.with_suffix(".md")``.
    """
    if not logdirs:
        raise ValueError("write_report needs at least one logdir")
    if labels is not None and len(labels) != len(logdirs):
        raise ValueError(f"got {len(labels)} labels for {len(logdirs)} logdirs")
    output = Path(output)
    runs = [load_run(Path(d), labels[i] if labels else None) for i, d in enumerate(logdirs)]
    _dedupe_labels(runs)
    summaries = [summarize(run) for run in runs]
    render_figure(runs, summaries, output)
    table = markdown_table(summaries)
    md_path = output.with_suffix(".md")
    tmp = md_path.with_name(f".{md_path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"# Telemetry report\n\n![report]({output.name})\n\n{table}", encoding="utf-8")
    os.replace(tmp, md_path)
    return table


def _dedupe_labels(runs: list[RunLog]) -> None:
    """Two runs both named ``logs`` or ``run`` get their parent dir prepended to tell them apart."""
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
    for run in runs:
        if seen[run.label] > 1:
            base = run.logdir.parent if run.logdir.name == "logs" else run.logdir
            run.label = f"{base.resolve().parent.name}/{run.label}"
