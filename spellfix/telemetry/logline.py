"""The one stdout line per log step, and the SageMaker regexes that read it.

SageMaker (and any log scraper) turns training metrics into charts by running a regex over the
job's stdout. That only works if the line has a format that never changes, so it is fixed here:

    spellfix: step=<int> key=value key=value ...

Keys are exactly the keys of ``logs/metrics.jsonl`` (``loss``, ``eval/exact_match``, ``gpu/0/util``),
floats are printed with ``:.6g`` and a pair never contains a space. ``time`` (unix seconds) is left
out of the line: at 6 significant digits it would be useless and the log line has its own timestamp.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

LINE_PREFIX = "spellfix:"

# A float as printed by ``format(x, ".6g")``: 12, -0.5, 0.0003, 1e-05, 1.23457e+06. nan/inf are
# deliberately not matched: SageMaker could not parse them as a number anyway.
NUMBER_REGEX = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

# Keys that are part of every row but are not printed on the line.
_NOT_PRINTED = frozenset({"step", "time"})

_BAD_KEY = re.compile(r"[\s=]")


def check_metric_key(key: str) -> None:
    """Raise ValueError when *key* cannot appear in a ``key=value`` pair of the log line."""
    if not isinstance(key, str) or not key or _BAD_KEY.search(key):
        raise ValueError(
            f"metric key {key!r} is not allowed: keys must be non-empty strings without "
            "whitespace or '=' (they are printed as key=value on the spellfix: log line)"
        )


def format_value(value: object) -> str:
    """Format one metric value the way the log line prints it (``:.6g`` for numbers)."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(value, ".6g")
    try:  # numpy / torch scalars
        return format(float(value), ".6g")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"metric value {value!r} is not a number") from None


def format_log_line(step: int, metrics: Mapping[str, object]) -> str:
    """Return ``spellfix: step=<step> key=value ...`` for one log step.

    Keys keep the order of *metrics*; ``step`` and ``time`` in *metrics* are ignored (step is
    printed first from the argument). Non-numeric values raise ValueError, because a scraper
    cannot chart them and silently dropping them would hide a bug in the caller.
    """
    parts = [f"{LINE_PREFIX} step={int(step)}"]
    for key, value in metrics.items():
        if key in _NOT_PRINTED or value is None:
            continue
        check_metric_key(key)
        parts.append(f"{key}={format_value(value)}")
    return " ".join(parts)


def parse_log_line(line: str) -> dict[str, float] | None:
    """Parse a line written by :func:`format_log_line` back to ``{"step": ..., key: value}``.

    Returns None for lines that are not spellfix metric lines. Useful for reading a job's
    stdout (e.g. CloudWatch logs) when its ``metrics.jsonl`` is not at hand.
    """
    line = line.strip()
    if not line.startswith(LINE_PREFIX + " step="):
        return None
    out: dict[str, float] = {}
    for pair in line[len(LINE_PREFIX) :].split():
        key, sep, raw = pair.partition("=")
        if not sep:
            return None
        try:
            out[key] = int(raw) if key == "step" else float(raw)
        except ValueError:
            return None
    return out


def metric_regex(key: str) -> str:
    """Regex whose first group captures the value of *key* on a spellfix log line.

    The leading ``spellfix: step=N`` anchors it to our lines only (transformers and accelerate
    print their own "loss" lines), and the space before the key stops ``loss`` from matching
    ``eval/loss``.
    """
    check_metric_key(key)
    return rf"{LINE_PREFIX} step=[0-9]+.* {re.escape(key)}={NUMBER_REGEX}"


def _definitions() -> list[dict[str, str]]:
    named = [
        ("train:loss", "loss"),
        ("train:learning_rate", "lr"),
        ("train:samples_per_s", "samples_per_s"),
        ("train:tokens_per_s", "tokens_per_s"),
        ("train:step_time_s", "step_time_s"),
        ("train:data_wait_share", "data_wait_share"),
        ("train:mfu", "mfu"),
        ("eval:loss", "eval/loss"),
        ("eval:exact_match", "eval/exact_match"),
        ("eval:false_positive_rate", "eval/false_positive_rate"),
        ("cpu:util", "cpu/util"),
    ]
    named += [(f"gpu{i}:util", f"gpu/{i}/util") for i in range(8)]
    named += [(f"gpu{i}:mem_used_gb", f"gpu/{i}/mem_used_gb") for i in range(8)]
    return [{"Name": name, "Regex": metric_regex(key)} for name, key in named]


#: SageMaker ``MetricDefinition`` entries (``{"Name", "Regex"}``) for the lines printed by
#: :func:`format_log_line`. 27 entries, below SageMaker's limit of 40 per job.
METRIC_DEFINITIONS: list[dict[str, str]] = _definitions()

