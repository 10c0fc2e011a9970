"""Classic-corrector peers and the accuracy benchmark that compares them with spellfix."""

from __future__ import annotations

import importlib.util
import os
import json
from pathlib import Path

import pytest

from spellfix.peers import CandidateTop1Baseline, GuardedSymSpellBaseline, PySpellCheckerPeer, SymSpellPeer, make_peer

REPO = Path(__file__).resolve().parent.parent


def test_symspell_fixes_an_obvious_misspelling_and_keeps_a_correct_query():
    peer = SymSpellPeer()
    assert peer.correct(["the beatls", "hello world"]) == ["the beatles", "hello world"]


def test_pyspellchecker_fixes_word_by_word_and_keeps_words_it_cannot_fix():
    peer = PySpellCheckerPeer()
    assert peer.correct(["recieve the musci", "qzxqzxqzx world"]) == ["receive the music", "qzxqzxqzx world"]


def test_candidate_top1_baseline_replaces_unknown_words_and_keeps_known_ones():
    baseline = CandidateTop1Baseline()
    assert baseline.correct(["recieve the package", "kickstart my heart"]) == ["receive the package", "kickstart my heart"]


def test_guarded_symspell_keeps_known_words_and_fixes_unknown_ones_to_the_closest_frequent_word():
    baseline = GuardedSymSpellBaseline()
    # "tv" and "hart" are known words (wordfreq / symspellpy): kept, as spellfix's guard keeps them;
    # "hedphones" is one edit from "headphones"; "qzxqzxqzx" has no word within 2 edits: kept
    assert baseline.correct(["tv stands", "kickstart my hart", "wireles hedphones", "qzxqzxqzx world"]) == [
        "tv stands", "kickstart my hart", "wireless headphones", "qzxqzxqzx world"]


def test_make_peer_rejects_an_unknown_name_listing_the_choices():
    with pytest.raises(ValueError, match="symspell, pyspellchecker"):
        make_peer("jamspell")


def _load_bench():
    """The benchmark script as a module. Its import sets OMP/MKL/OpenBLAS thread variables for its own
    process; they are restored here so they do not leak into later tests (a subprocess started by the
    resume test would otherwise run with other thread settings and other float rounding)."""
    from unittest import mock

    spec = importlib.util.spec_from_file_location("accuracy_bench", REPO / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(os.environ):
        spec.loader.exec_module(module)
    return module


def test_accuracy_bench_runs_peers_on_a_ten_row_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    dev = [
        ("the beatls", "the beatles", "0"), ("helo world", "hello world", "0"), ("hart of gold", "heart of gold", "1"),
        ("blue sky", "blue sky", ""), ("red house", "red house", ""),
    ]
    with open(data / "dev.jsonl", "w") as f:
        for q, c, rw in dev + [(c, c, "") for _, c, _ in dev[:5]]:
            f.write(json.dumps({"query": q, "correction": c, "real_word": rw, "domain": "music"}) + "\n")
    (data / "norvig1.tsv").write_text(
        "".join(f"{a}\t{b}\n" for a, b in [("acess", "access"), ("speling", "spelling"), ("recieve", "receive"),
                                         ("wrod", "word"), ("hte", "the"), ("becuase", "because"), ("untill", "until"),
                                         ("wich", "which"), ("tommorow", "tomorrow"), ("adress", "address")])
    )
    out = tmp_path / "results"
    bench = _load_bench()
    code = bench.main(["--data-dir", str(data), "--sets", "dev,norvig1", "--output-dir", str(out),
                       "--latency-sample", "3", "--name", "acc"])
    assert code == 0
    report = json.loads((out / "acc.json").read_text())
    got = {(e["name"], e["dataset"]) for e in report["entries"]}
    assert got == {(p, s) for p in ("symspell", "pyspellchecker", "candidates-top1", "symspell-guarded") for s in ("dev", "norvig1")}
    norvig = next(e for e in report["entries"] if e["name"] == "symspell" and e["dataset"] == "norvig1")
    assert norvig["identity_rows_added"] and norvig["n_correct"] == 10 and norvig["n_misspelled"] == 10
    assert norvig["exact_match_misspelled"] >= 0.5  # these are easy single edits
    for entry in report["entries"]:  # the changed correct inputs are named, as many as the rate says
        changed = entry["changed_correct"]
        assert len(changed) == round(entry["false_positive_rate"] * entry["n_correct"])
        assert all(c["prediction"] != c["query"] for c in changed)
    dev_entry = next(e for e in report["entries"] if e["name"] == "symspell" and e["dataset"] == "dev")
    assert dev_entry["n_misspelled"] == 3 and dev_entry["n_correct"] == 7
    assert set(dev_entry["breakdown"]["error_type"]) == {"none", "non-word", "real-word"}
    assert {"machine", "versions"} <= set(report)
    md = (out / "acc.md").read_text()
    assert "| symspell |" in md and "## norvig1" in md and "Bar to beat" in md and "Correct words changed:" in md

    # --merge: re-running one system on one set keeps every other entry
    bench.main(["--data-dir", str(data), "--sets", "norvig1", "--systems", "symspell", "--output-dir", str(out),
                "--latency-sample", "3", "--name", "acc", "--merge"])
    merged = json.loads((out / "acc.json").read_text())
    assert sorted((e["name"], e["dataset"]) for e in merged["entries"]) == sorted(got)
    assert next(e for e in merged["entries"] if (e["name"], e["dataset"]) == ("symspell", "norvig1"))["measured_at"]


def test_accuracy_bench_needs_a_model_for_spellfix(tmp_path):
    bench = _load_bench()
    for system in ("spellfix", "spellfix-decoder"):
        with pytest.raises(SystemExit):
            bench.main(["--systems", system, "--output-dir", str(tmp_path)])


def test_heldout_without_codespell_drops_only_misspelled_rows_whose_pair_codespell_lists():
    from spellfix.data.noise import codespell_pairs

    typo, word = codespell_pairs()[0]
    rows = [
        {"query": f"{typo} song", "correction": f"{word} song", "misspelling": typo, "word": word},
        {"query": "hedphones deal", "correction": "headphones deal", "misspelling": "hedphones", "word": "headphones"},
        {"query": f"{word} song", "correction": f"{word} song", "misspelling": "", "word": ""},
    ]
    assert ("hedphones", "headphones") not in set(codespell_pairs())
    assert _load_bench().without_codespell_pairs(rows) == rows[1:]


def test_accuracy_markdown_says_whether_spellfix_clears_the_peers_bar():
    bench = _load_bench()

    def entry(name, fix, fp, margin=None):
        return {"name": name, "dataset": "dev", "n_misspelled": 10, "n_correct": 10, "exact_match_misspelled": fix,
                "false_positive_rate": fp, "word_correction_rate": fix, "cer": 0.1, "queries_per_s": 1.0,
                "queries_per_cpu_s": 1.0, "p50_ms": 1.0, "p99_ms": 2.0, "copy_margin": margin}

    report = {"command": "x", "machine": {"loadavg_before": [0.0], "loadavg_after": [0.0], "cpu_count": 2}, "entries": [
        entry("symspell", 0.37, 0.20), entry("pyspellchecker", 0.39, 0.16), entry("spellfix", 0.45, 0.10, 1.5)]}
    md = bench.render_markdown(report)
    assert "fix > 39.0% and false-pos < 16.0%" in md
    assert "spellfix (copy margin 1.50 nats) clears it: **yes**" in md
    report["entries"][2]["false_positive_rate"] = 0.17
    assert "spellfix (copy margin 1.50 nats) clears it: **no**" in bench.render_markdown(report)
