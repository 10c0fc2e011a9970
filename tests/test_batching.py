"""Length-grouped batching: nothing lost or duplicated, little padding, same micro-batches for any world size."""

from __future__ import annotations

import random

import pytest
import torch

from spellfix.data.batching import PairCollator, padding_ratio, plan_epoch, rank_micro_batches


def lengths(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    src = [rng.randint(3, 30) for _ in range(n)]
    tgt = [max(2, s + rng.randint(-2, 2)) for s in src]
    return src, tgt


def test_an_epoch_covers_every_example_once_except_the_last_partial_batch():
    src, tgt = lengths(1000)
    plan = plan_epoch(src, tgt, global_batch_size=64, micro_batches_per_step=4, seed=3, epoch=0)
    seen = [i for batch in plan for micro in batch.micro_batches for i in micro]
    assert len(seen) == len(set(seen)) == 1000 - 1000 % 64
    assert all(batch.size == 64 and len(batch.micro_batches) == 4 for batch in plan)
    assert all(batch.target_tokens == sum(tgt[i] for m in batch.micro_batches for i in m) for batch in plan)


def test_grouping_pads_far_less_than_max_length_padding_and_random_batches():
    src, tgt = lengths(4000)
    grouped = plan_epoch(src, tgt, global_batch_size=256, micro_batches_per_step=8, seed=0, epoch=0)
    ungrouped = plan_epoch(src, tgt, global_batch_size=256, micro_batches_per_step=8, seed=0, epoch=0, group_by_length=False)
    real = sum(src) + sum(tgt)
    pad_to_64 = 1 - real / (len(src) * 128)
    assert padding_ratio(grouped, src, tgt) < 0.05
    assert padding_ratio(grouped, src, tgt) < padding_ratio(ungrouped, src, tgt) < pad_to_64


def test_plan_is_deterministic_for_a_seed_and_changes_with_the_epoch():
    src, tgt = lengths(500)
    kwargs = dict(global_batch_size=32, micro_batches_per_step=2, seed=7)
    assert plan_epoch(src, tgt, epoch=0, **kwargs) == plan_epoch(src, tgt, epoch=0, **kwargs)
    assert plan_epoch(src, tgt, epoch=0, **kwargs) != plan_epoch(src, tgt, epoch=1, **kwargs)


def test_token_budget_micro_batches_stay_under_the_budget():
    src, tgt = lengths(2000)
    plan = plan_epoch(src, tgt, global_batch_size=4, micro_batches_per_step=4, seed=0, epoch=0, max_tokens=600)
    for batch in plan:
        for micro in batch.micro_batches:
            assert len(micro) * (max(src[i] for i in micro) + max(tgt[i] for i in micro)) <= 600
    seen = [i for b in plan for m in b.micro_batches for i in m]
    assert len(seen) == len(set(seen)) > 1500


def test_two_ranks_split_exactly_the_micro_batches_of_one_rank():
    src, tgt = lengths(600)
    plan = plan_epoch(src, tgt, global_batch_size=32, micro_batches_per_step=4, seed=1, epoch=0)
    single = list(rank_micro_batches(plan, 0, 1))
    r0, r1 = list(rank_micro_batches(plan, 0, 2)), list(rank_micro_batches(plan, 1, 2))
    interleaved = [m for pair in zip(r0[0::2], r0[1::2], r1[0::2], r1[1::2]) for m in (pair[0], pair[2], pair[1], pair[3])]
    assert interleaved == single


def test_resume_position_skips_completed_steps():
    src, tgt = lengths(600)
    plan = plan_epoch(src, tgt, global_batch_size=32, micro_batches_per_step=2, seed=1, epoch=0)
    assert list(rank_micro_batches(plan, 0, 1, start_step=3)) == list(rank_micro_batches(plan, 0, 1))[6:]


def test_indivisible_global_batch_is_rejected():
    src, tgt = lengths(100)
    with pytest.raises(ValueError, match="not divisible"):
        plan_epoch(src, tgt, global_batch_size=30, micro_batches_per_step=4, seed=0, epoch=0)


def test_collator_pads_to_the_longest_row_and_shifts_decoder_inputs():
    batch = PairCollator(pad_id=1, decoder_start_id=2)([([0, 5, 6, 2], [5, 6, 2]), ([0, 7, 2], [7, 2])])
    assert batch["input_ids"].tolist() == [[0, 5, 6, 2], [0, 7, 2, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["labels"].tolist() == [[5, 6, 2], [7, 2, -100]]
    assert batch["decoder_input_ids"].tolist() == [[2, 5, 6], [2, 7, 1]]
    assert batch["n_tokens"].item() == 4 + 3 + 3 + 2
    assert batch["input_ids"].dtype == torch.long


def test_tokenized_pairs_hold_plain_lists_not_lazy_arrow_columns():
    """The training loop reads every source length each step: from a lazy datasets Column that
    decoded the whole table per step (7x the step on 283k pairs); held as lists it is a lookup."""
    import datasets

    from spellfix.data.tokenization import TokenizedPairs

    table = datasets.Dataset.from_dict({"input_ids": [[0, 5, 2], [0, 7, 8, 9, 2]], "labels": [[0, 5, 2], [0, 7, 2]], "source": ["a", "b"]})
    pairs = TokenizedPairs(table.shuffle(seed=1))  # an indices mapping, as after a shuffle or select
    assert type(pairs.sources) is list and type(pairs.targets) is list
    assert sorted(pairs.source_lengths) == [3, 5] and sorted(pairs.target_lengths) == [3, 3]
    assert {tuple(pairs[i][0]) for i in range(len(pairs))} == {(0, 5, 2), (0, 7, 8, 9, 2)}
    assert pairs.__getitems__([0, 1]) == [pairs[0], pairs[1]]
