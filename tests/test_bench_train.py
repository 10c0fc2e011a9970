"""The training benchmark's arithmetic: step timing from step ends, FLOP counts, ratios and the table."""

from __future__ import annotations

import pytest

from spellfix.bench.train import RunRecord, _entry, _summary, model_flops_per_token, render_markdown, summarize
from spellfix.modeling import BART_BASE_SHAPE


def test_steps_are_timed_end_to_end_after_the_warmup():
    record = RunRecord(step_ends=[10.0, 12.0, 13.0, 15.0], samples=[256, 256, 128, 256], tokens=[3000, 3100, 1500, 2900])
    figures = summarize(record, warmup=1, flops_per_token=1.0)
    # steps 2..4 measured: durations 2, 1, 2 s; their samples 256 + 128 + 256
    assert figures["measured_steps"] == 3
    assert figures["samples_per_s"] == pytest.approx(640 / 5)
    assert figures["tokens_per_s"] == pytest.approx((3100 + 1500 + 2900) / 5)
    assert figures["median_step_s"] == 2.0


def test_without_warmup_the_first_step_is_still_excluded_because_it_has_no_start():
    record = RunRecord(step_ends=[5.0, 6.0, 8.0], samples=[1, 2, 3], tokens=[1, 1, 1])
    assert summarize(record, warmup=0, flops_per_token=1.0)["samples_per_s"] == pytest.approx(5 / 3)
    with pytest.raises(RuntimeError, match="need at least"):
        summarize(RunRecord(step_ends=[5.0], samples=[1], tokens=[1]), warmup=0, flops_per_token=1.0)


def test_bart_base_flops_per_token_count_the_lm_head_with_the_decoder():
    src, tgt = model_flops_per_token(BART_BASE_SHAPE)
    d = 768
    assert src == 6 * 6 * (4 * d * d + 2 * d * 3072)  # 6 encoder layers: attention + FFN projections
    assert tgt == 6 * (6 * (8 * d * d + 2 * d * 3072) + 50265 * d)  # + cross-attention, + LM head
    assert tgt > src


def test_summary_reports_ratios_of_medians_and_the_issue_targets():
    def runs(sps):
        return [{"samples_per_s": x, "tokens_per_s": 10 * x, "median_step_s": 1.0, "peak_rss_gb": 1.0, "load_avg_1m": 5.0}
                for x in sps]

    entries = [
        _entry("naive-trainer", runs([2.0, 2.2, 1.8]), 10.0, 1e9, 1e12),
        _entry("tuned-trainer", runs([20.0, 25.0, 30.0]), 10.0, 1e9, 1e12),
        _entry("spellfix", runs([40.0, 30.0, 35.0]), 10.0, 1e9, 1e12),
    ]
    summary = _summary(entries)
    assert entries[2]["mfu"] == pytest.approx(350 * 1e9 / 1e12)  # median tokens/s x FLOPs/token over the one peak
    assert summary["spellfix_vs_tuned-trainer_samples_per_s"] == pytest.approx(35 / 25)
    assert summary["spellfix_vs_naive-trainer_samples_per_s"] == pytest.approx(35 / 2)
    assert summary["meets_target_vs_tuned-trainer"] and summary["meets_target_vs_naive-trainer"]
    table = render_markdown(entries + [summary])
    assert "| spellfix | 35.00 |" in table and "1.40x" in table
    # the Trainer under spellfix's CPU heap setting is a reference: a ratio, no target
    reference = _entry("tuned-trainer cpu_allocator=retain", runs([30.0, 32.0, 34.0]), 10.0, 1e9, 1e12)
    summary = _summary(entries + [reference])
    assert summary["spellfix_vs_tuned-trainer cpu_allocator=retain_samples_per_s"] == round(35 / 32, 3)
    assert "meets_target_vs_tuned-trainer cpu_allocator=retain" not in summary
