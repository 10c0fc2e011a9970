"""Throughput options change speed, not results: each is checked against the plain path it replaces,
and bad combinations fail at start-up with the recipe key to change."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from spellfix.config import ModelConfig, load_recipe
from spellfix.data.batching import PairCollator, padding_ratio, plan_epoch
from spellfix.modeling import build_model
from spellfix.training.hardware import HardwareError
from spellfix.training.loop import NonFiniteLossError, train
from spellfix.training.loss import Seq2SeqLoss, fused_linear_cross_entropy
from spellfix.training.nonfinite import NonFiniteGuard
from spellfix.training.precision import Bf16ComputeCopy

from conftest import TINY_MODEL

ROWS = [([0, 5, 6, 7, 8, 2], [5, 6, 2]), ([0, 9, 2], [9, 8, 7, 6, 2]), ([0, 11, 12, 2], [11, 2])]


def tiny_model(arch: str = "mbart") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(architecture=arch, config=dict(TINY_MODEL["config"])), 40)


# ------------------------------------------------------------------------------------ fused head


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_fused_linear_cross_entropy_matches_logits_then_cross_entropy(smoothing, chunk_rows):
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(7, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(30, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(30, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 30, (7,), generator=gen)
    ref = F.cross_entropy(hidden @ weight.T + bias, labels, reduction="sum", label_smoothing=smoothing)
    ref_grads = torch.autograd.grad(3.0 * ref, [hidden, weight])
    got = fused_linear_cross_entropy(hidden, weight, labels, bias=bias, label_smoothing=smoothing, chunk_rows=chunk_rows)
    got_grads = torch.autograd.grad(3.0 * got, [hidden, weight])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(got_grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_fp16_head_applies_the_loss_scale_before_rounding_so_small_gradients_survive():
    """fp16 (GradScaler) path: logit gradients are recomputed in backward and scaled before the fp16
    cast, like autocast + F.cross_entropy. Vocabulary rows with softmax mass ~1e-9 have gradients
    that round to zero in fp16 unless scaled first (the forward-gradient variant loses all of them)."""
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(24, 16, generator=gen)
    weight = 0.01 * torch.randn(200, 16, generator=gen)
    bias = torch.zeros(200)
    bias[:100] = -16.0  # p ~ 1e-9 for half the vocabulary
    labels = torch.randint(100, 200, (24,), generator=gen)
    scale = 2.0**16 / 24  # GradScaler's initial scale over the loss normaliser
    w_ref, h_ref = weight.clone().requires_grad_(), hidden.clone().requires_grad_()
    (scale * F.cross_entropy(h_ref @ w_ref.T + bias, labels, reduction="sum")).backward()
    w16, h16 = weight.clone().requires_grad_(), hidden.half().requires_grad_()
    (scale * fused_linear_cross_entropy(h16, w16, labels, bias=bias, chunk_rows=5)).backward()
    assert torch.isfinite(w16.grad).all() and torch.isfinite(h16.grad).all()
    tiny_ref, tiny = w_ref.grad[:100], w16.grad[:100]
    assert (tiny - tiny_ref).norm() / tiny_ref.norm() < 0.05
    torch.testing.assert_close(h16.grad.float(), h_ref.grad, rtol=1e-2, atol=1e-2 * h_ref.grad.abs().max().item())


@pytest.mark.parametrize("arch", ["bart", "mbart"])
def test_fused_head_loss_and_gradients_equal_the_full_logits_path_with_padding(arch):
    batch = PairCollator(pad_id=1, decoder_start_id=2)(ROWS)
    full = Seq2SeqLoss(tiny_model(arch).double(), "full-logits", label_smoothing=0.1)
    fused = Seq2SeqLoss(copy.deepcopy(full.model), "fused-head", label_smoothing=0.1)
    a, b = full(**batch), fused(**batch)
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    for (name, p), q in zip(full.named_parameters(), fused.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_fused_head_refuses_a_model_without_the_bart_head_layout():
    with pytest.raises(ValueError, match="train.loss=full-logits"):
        Seq2SeqLoss(torch.nn.Linear(2, 2), "fused-head")


def test_collator_label_positions_index_exactly_the_real_target_tokens():
    batch = PairCollator(pad_id=1, decoder_start_id=2)(ROWS)
    flat = batch["labels"].view(-1)
    assert flat[batch["label_positions"]].tolist() == [t for _, target in ROWS for t in target]


def test_max_length_padding_pads_every_batch_to_the_fixed_widths():
    batch = PairCollator(pad_id=1, decoder_start_id=2, max_source_length=10, max_target_length=8)(ROWS)
    assert batch["input_ids"].shape == (3, 10) and batch["labels"].shape == (3, 8)
    assert int(batch["attention_mask"].sum()) == sum(len(s) for s, _ in ROWS)


# -------------------------------------------------------------------------------------- batching


def test_grouping_by_source_only_pads_targets_more_than_the_joint_key():
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(3, 20, (4000,), generator=gen).tolist()
    tgt = [max(2, s + d) for s, d in zip(src, torch.randint(-6, 7, (4000,), generator=gen).tolist())]
    kwargs = dict(global_batch_size=256, micro_batches_per_step=1, seed=0, epoch=0)
    joint = plan_epoch(src, tgt, **kwargs)
    source_only = plan_epoch(src, tgt, length_key="source", **kwargs)
    assert padding_ratio(joint, src, tgt) < padding_ratio(source_only, src, tgt)
    for plan in (joint, source_only):
        seen = [i for b in plan for m in b.micro_batches for i in m]
        assert len(seen) == len(set(seen)) == 4000 - 4000 % 256


# ------------------------------------------------------------------------------------ bf16 copy


def test_bf16_compute_copy_keeps_ties_moves_grads_to_fp32_master_and_weights_back():
    master = tiny_model()
    copy_ = Bf16ComputeCopy(master)
    compute = copy_.compute
    assert compute.model.shared.weight.dtype == torch.bfloat16
    assert compute.lm_head.weight is compute.model.shared.weight  # tie preserved
    Seq2SeqLoss(compute, "fused-head")(**PairCollator(1, 2)(ROWS)).backward()
    bf16_grad = compute.lm_head.weight.grad.float().clone()
    copy_.grads_to_master()
    assert master.lm_head.weight.grad.dtype == torch.float32
    torch.testing.assert_close(master.lm_head.weight.grad, bf16_grad)
    assert compute.lm_head.weight.grad is None
    with torch.no_grad():
        master.lm_head.weight.add_(1.0)
    copy_.weights_to_compute()
    torch.testing.assert_close(compute.lm_head.weight.float(), master.lm_head.weight.bfloat16().float())


# ----------------------------------------------------------------------------- non-finite guard


def test_log_steps_guard_skips_a_non_finite_step_inside_fused_adamw_without_a_host_read():
    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([param], lr=0.1, fused=True)
    guard = NonFiniteGuard("log_steps", max_consecutive=2, device=torch.device("cpu"))
    param.grad = torch.full((3,), float("nan"))
    guard.step(opt, torch.tensor(float("inf")), 10)
    assert torch.equal(param.detach(), torch.ones(3)) and not hasattr(opt, "found_inf")
    assert not guard.exhausted()  # one bad step: below the limit
    param.grad = torch.ones(3)
    guard.step(opt, torch.tensor(2.0), 10)
    assert param.detach().lt(1).all() and float(opt.state[param]["step"]) == 1.0  # the skipped step was not counted
    loss, tokens = guard.pop_window()
    assert loss.item() == 2.0 and tokens.item() == 10  # the non-finite step is not in the logged loss
    for step in (2, 3):
        param.grad = torch.full((3,), float("nan"))
        guard.step(opt, torch.tensor(float("nan")), 10)
    assert guard.exhausted()
    assert "not finite for 2 consecutive steps (last at step 3)" in str(guard.error(3))


# ------------------------------------------------------------------------------ end to end loop


def test_fused_head_and_full_logits_runs_train_to_the_same_weights(tiny_recipe_dict, tmp_path):
    tiny_recipe_dict["train"].update(max_steps=4, save_every=0, log_every=2, host_sync="log_steps")
    runs = {}
    for loss in ("full-logits", "fused-head"):
        recipe = load_recipe(copy.deepcopy(tiny_recipe_dict), overrides={"train.loss": loss})
        runs[loss] = load_file(str(train(recipe, tmp_path / loss, progress=False).final_dir / "model.safetensors"))
    for name, value in runs["full-logits"].items():
        torch.testing.assert_close(runs["fused-head"][name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_every_option_on_trains_and_saves_fp32_weights(tiny_recipe_dict, tmp_path):
    tiny_recipe_dict["train"].update(
        precision="bf16", bf16_weights=True, loss="fused-head", attention="eager", host_sync="log_steps",
        max_steps=6, save_every=3, log_every=3,
    )
    tiny_recipe_dict["train"]["batching"] = {"length_key": "source+target", "num_workers": 1}
    result = train(load_recipe(tiny_recipe_dict), tmp_path / "run", progress=False)
    assert result.steps == 6
    saved = load_file(str(result.final_dir / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in saved.values())
    resumed = train(load_recipe(tiny_recipe_dict, overrides={"train.max_steps": 8}), tmp_path / "run", progress=False)
    assert resumed.steps == 8


def test_non_finite_loss_with_host_sync_at_log_steps_stops_at_a_log_step(tiny_recipe_dict, tmp_path):
    recipe = load_recipe(tiny_recipe_dict, overrides={
        "train.lr": 1e12, "train.grad_clip": None, "train.warmup_steps": 1, "train.max_nonfinite_steps": 2,
        "train.max_steps": 60, "train.host_sync": "log_steps", "train.log_every": 4,
    })
    with pytest.raises(NonFiniteLossError, match=r"not finite for \d+ consecutive steps.*lower train.lr"):
        train(recipe, tmp_path / "run", progress=False)


def test_bf16_weights_without_bf16_precision_names_the_key(tiny_recipe_dict, tmp_path):
    with pytest.raises(HardwareError, match="train.bf16_weights=false"):
        train(load_recipe(tiny_recipe_dict, overrides={"train.bf16_weights": True}), tmp_path / "run", progress=False)


def test_host_sync_at_log_steps_needs_the_fused_optimizer(tiny_recipe_dict, tmp_path):
    recipe = load_recipe(tiny_recipe_dict, overrides={"train.host_sync": "log_steps", "train.fused_adamw": "off"})
    with pytest.raises(ValueError, match="train.fused_adamw to auto or on"):
        train(recipe, tmp_path / "run", progress=False)
