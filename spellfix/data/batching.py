"""Length-grouped batching with dynamic padding, identical whatever the number of processes.

The plan for an epoch is a list of *global* batches (one optimizer step each), each split into a
fixed number of micro-batches. Micro-batch ``j`` of a step runs on rank ``j % world`` at
accumulation slot ``j // world``. Because the split does not depend on the world size, a run on one
process with accumulation and a run on N processes see exactly the same micro-batches, and with the
loss normalised by the global batch's target-token count (known from the plan, no communication)
they compute the same gradient.

Length grouping sorts a pool of ``pool_factor`` global batches by (source, target) length before
cutting it, so a micro-batch pads only to its own longest row — short queries are never padded to a
global max length. Unlike the Trainer's ``group_by_length`` (source only), the key includes the
target, so labels pad little too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch


@dataclass(frozen=True)
class GlobalBatch:
    """One optimizer step: micro-batches of example indices and the step's target-token count."""

    micro_batches: tuple[tuple[int, ...], ...]
    target_tokens: int

    @property
    def size(self) -> int:
        return sum(len(m) for m in self.micro_batches)


def _permutation(n: int, seed: int, epoch: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


def plan_epoch(
    source_lengths: Sequence[int],
    target_lengths: Sequence[int],
    *,
    global_batch_size: int,
    micro_batches_per_step: int,
    seed: int,
    epoch: int,
    group_by_length: bool = True,
    pool_factor: int = 50,
    max_tokens: int | None = None,
    length_key: str = "source+target",
) -> list[GlobalBatch]:
    """Deterministic list of global batches for one epoch (the last partial batch is dropped).

    Fixed-size mode: each global batch has ``global_batch_size`` examples cut into
    ``micro_batches_per_step`` equal micro-batches (sorted by length inside the batch so micro-batches
    pad little). Token-budget mode (``max_tokens``): micro-batches are filled greedily up to
    ``max_tokens`` padded (source + target) tokens, and every ``micro_batches_per_step`` consecutive
    micro-batches form a step. ``length_key="source"`` sorts by source length only (as transformers'
    ``group_by_length`` does), so targets pad more — kept to measure what the joint key buys.
    """
    if length_key not in ("source+target", "source"):
        raise ValueError(f"length_key must be 'source+target' or 'source', got {length_key!r}")
    n = len(source_lengths)
    if n != len(target_lengths):
        raise ValueError("source_lengths and target_lengths differ in length")
    if global_batch_size % micro_batches_per_step:
        raise ValueError(
            f"global batch {global_batch_size} is not divisible into {micro_batches_per_step} micro-batches"
        )
    order = _permutation(n, seed, epoch)
    if length_key == "source":
        key = [(source_lengths[i],) for i in range(n)]
    else:
        key = [(source_lengths[i], target_lengths[i]) for i in range(n)]

    if max_tokens is not None:
        return _plan_token_budget(
            order, key, source_lengths, target_lengths, micro_batches_per_step, seed, epoch, group_by_length, pool_factor, max_tokens
        )

    micro = global_batch_size // micro_batches_per_step
    pool = global_batch_size * max(1, pool_factor) if group_by_length else global_batch_size
    batches: list[GlobalBatch] = []
    for start in range(0, n - global_batch_size + 1, pool):
        chunk = order[start : start + pool]
        if group_by_length:
            chunk.sort(key=lambda i: key[i])
        for b in range(0, len(chunk) - global_batch_size + 1, global_batch_size):
            rows = chunk[b : b + global_batch_size]
            if not group_by_length:
                rows = sorted(rows, key=lambda i: key[i])
            micro_batches = tuple(tuple(rows[m : m + micro]) for m in range(0, global_batch_size, micro))
            batches.append(GlobalBatch(micro_batches, sum(target_lengths[i] for i in rows)))
    return _shuffled(batches, seed, epoch)


def _plan_token_budget(order, key, source_lengths, target_lengths, per_step, seed, epoch, group_by_length, pool_factor, max_tokens):
    pool = 4096 * max(1, pool_factor // 10) if group_by_length else len(order)
    micro_batches: list[tuple[int, ...]] = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        if group_by_length:
            chunk.sort(key=lambda i: key[i])
        current: list[int] = []
        long_src = long_tgt = 0
        for i in chunk:
            s_len, t_len = source_lengths[i], target_lengths[i]
            if s_len + t_len > max_tokens:
                raise ValueError(f"an example of {s_len + t_len} tokens exceeds train.batching.max_tokens={max_tokens}")
            grown_src, grown_tgt = max(long_src, s_len), max(long_tgt, t_len)
            if current and (len(current) + 1) * (grown_src + grown_tgt) > max_tokens:
                micro_batches.append(tuple(current))
                current, grown_src, grown_tgt = [], s_len, t_len
            current.append(i)
            long_src, long_tgt = grown_src, grown_tgt
        if current:
            micro_batches.append(tuple(current))
    micro_batches = _shuffled(micro_batches, seed, epoch + 7919)
    steps = []
    for s in range(0, len(micro_batches) - per_step + 1, per_step):
        group = tuple(micro_batches[s : s + per_step])
        steps.append(GlobalBatch(group, sum(target_lengths[i] for m in group for i in m)))
    return steps


def _shuffled(items: list, seed: int, epoch: int) -> list:
    return [items[i] for i in _permutation(len(items), seed + 1, epoch)]


def rank_micro_batches(plan: Sequence[GlobalBatch], rank: int, world_size: int, start_step: int = 0) -> Iterator[tuple[int, ...]]:
    """The micro-batches this rank runs, in order, from ``start_step`` on (resume skips the rest)."""
    for batch in plan[start_step:]:
        for j in range(rank, len(batch.micro_batches), world_size):
            yield batch.micro_batches[j]


class MicroBatchSampler(torch.utils.data.Sampler):
    """A ``batch_sampler`` for DataLoader over one rank's micro-batches of an epoch plan."""

    def __init__(self, plan: Sequence[GlobalBatch], rank: int, world_size: int, start_step: int = 0):
        self.plan, self.rank, self.world_size, self.start_step = plan, rank, world_size, start_step

    def __iter__(self) -> Iterator[list[int]]:
        for micro in rank_micro_batches(self.plan, self.rank, self.world_size, self.start_step):
            yield list(micro)

    def __len__(self) -> int:
        per_step = math.ceil(len(self.plan[0].micro_batches) / self.world_size) if self.plan else 0
        return per_step * (len(self.plan) - self.start_step)


class PairCollator:
    """Pads a micro-batch to its own longest row (dynamic padding) and builds decoder inputs.

    decoder_input_ids = ``</s> + labels[:-1]`` (BART's decoder_start_token_id = eos), labels padded
    with -100 so padding never counts in the loss. ``label_positions`` holds the flat indices of the
    real (non-pad) label positions, computed here on the host so the fused LM head can gather them
    on the device without a host synchronisation (boolean-mask indexing would need one).

    ``max_source_length``/``max_target_length`` given: every batch is padded to those fixed widths
    instead (``train.batching.padding: max_length`` — the "before" of dynamic padding, and what
    static-shape compilers want).
    """

    def __init__(self, pad_id: int, decoder_start_id: int, *, max_source_length: int | None = None,
                 max_target_length: int | None = None):
        self.pad_id, self.start_id = pad_id, decoder_start_id
        self.max_source_length, self.max_target_length = max_source_length, max_target_length

    def __call__(self, rows: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        bsz = len(rows)
        src_len = self.max_source_length or max(len(s) for s, _ in rows)
        tgt_len = self.max_target_length or max(len(t) for _, t in rows)
        input_ids = torch.full((bsz, src_len), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((bsz, src_len), dtype=torch.long)
        decoder_input_ids = torch.full((bsz, tgt_len), self.pad_id, dtype=torch.long)
        labels = torch.full((bsz, tgt_len), -100, dtype=torch.long)
        n_src = n_tgt = 0
        for r, (src, tgt) in enumerate(rows):
            input_ids[r, : len(src)] = torch.tensor(src)
            attention_mask[r, : len(src)] = 1
            labels[r, : len(tgt)] = torch.tensor(tgt)
            decoder_input_ids[r, 0] = self.start_id
            decoder_input_ids[r, 1 : len(tgt)] = torch.tensor(tgt[:-1])
            n_src += len(src)
            n_tgt += len(tgt)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "decoder_input_ids": decoder_input_ids,
            "labels": labels,
            "label_positions": (labels.view(-1) != -100).nonzero().view(-1),
            "n_tokens": torch.tensor(n_src + n_tgt),
        }


def padding_ratio(plan: Sequence[GlobalBatch], source_lengths: Sequence[int], target_lengths: Sequence[int]) -> float:
    """Share of padded positions over all micro-batches (source + target)."""
    real = padded = 0
    for batch in plan:
        for micro in batch.micro_batches:
            s = [source_lengths[i] for i in micro]
            t = [target_lengths[i] for i in micro]
            real += sum(s) + sum(t)
            padded += len(micro) * (max(s) + max(t))
    return 1 - real / padded if padded else 0.0
