"""The training loop: one story from setup to saved model, readable top to bottom.

setup (hardware checks, tokenizer, data, model, optimizer) → resume → loop over planned global
batches (micro-batches with no_sync, autocast, loss normalised by the global batch's target tokens)
→ log / evaluate / checkpoint at their cadences → final model. accelerate does device placement,
DDP and mixed precision; the loop itself stays plain PyTorch (Fabric-style "keep your own loop").

Throughput options are small named pieces, each switchable from the recipe (docs/training.md has
their measured effect): length grouping / dynamic padding / token budgets (``train.batching``,
spellfix.data.batching), the fused LM head + loss (``train.loss``, spellfix.training.loss), bf16
compute weights with fp32 masters (``train.bf16_weights``, spellfix.training.precision), fused
AdamW (``train.fused_adamw``), ``train.compile``, ``train.attention``, DataLoader workers + pinned
memory + non-blocking copies, no host sync between log steps (``train.host_sync``,
spellfix.training.nonfinite) and ``no_sync`` during accumulation (``train.ddp_no_sync``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from spellfix.config import Recipe, TrainConfig, load_recipe, recipe_to_yaml, save_recipe
from spellfix.data.batching import MicroBatchSampler, PairCollator, padding_ratio, plan_epoch
from spellfix.data.pipeline import SourceFormatter, load_dev_rows, load_training_pairs
from spellfix.data.tokenization import TokenizedPairs, tokenize_pairs
from spellfix.modeling import (
    EOS_ID,
    PAD_ID,
    build_model,
    count_parameters,
    input_settings,
    load_pretrained,
    load_tokenizer,
    save_model_dir,
    set_generation_defaults,
    train_byte_bpe_tokenizer,
)
from spellfix.training import checkpoint as ckpt
from spellfix.training.hardware import Hardware, HardwareError, check_hardware
from spellfix.training.loss import Seq2SeqLoss
from spellfix.training.nonfinite import NonFiniteGuard, NonFiniteLossError, supports_found_inf
from spellfix.training.optim import build_optimizer, build_scheduler, scaled_lr
from spellfix.training.precision import Bf16ComputeCopy
from spellfix.training.signals import Preempted, StopFlag

log = logging.getLogger(__name__)

ACCELERATE_PRECISION = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}
AUTOCAST_DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16}

__all__ = ["NonFiniteLossError", "TrainResult", "train"]


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path | None
    best_dir: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    elapsed_s: float = 0.0


def train(
    recipe: Recipe | str | os.PathLike[str],
    output_dir: str | os.PathLike[str] | None = None,
    resume: str = "auto",
    *,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    logdir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``recipe`` into ``output_dir`` (default ``runs/<recipe name>``).

    ``resume``: ``auto`` continues from the newest complete checkpoint if there is one, ``never``
    starts fresh, or a checkpoint path. Raises :class:`Preempted` after saving on SIGTERM.
    Runs the same under ``accelerate launch`` / ``torchrun`` with N processes: the global batch
    stays ``train.global_batch_size``; only rank 0 writes logs, checkpoints and models.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    out = Path(output_dir or f"runs/{recipe.name}")
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else out / "checkpoints"
    log_dir = Path(logdir) if logdir else out / "logs"
    t = recipe.train

    # ---- setup: hardware, processes, precision --------------------------------------------
    hardware, precision = check_hardware(t.precision)
    check_throughput_options(t, precision)
    # bf16_weights: the model itself runs in bf16, so no autocast (accelerate "no").
    accelerator = _new_accelerator("no" if t.bf16_weights else ACCELERATE_PRECISION[precision], cpu=hardware.device_type == "cpu")
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    per_device = t.per_device_batch_size or t.global_batch_size // world
    micro_per_step = t.global_batch_size // per_device  # fixed whatever the world size (see batching.py)
    if t.global_batch_size % per_device or micro_per_step % world:
        raise ValueError(
            f"train.global_batch_size={t.global_batch_size} must be a multiple of per_device_batch_size "
            f"({per_device}) x world size ({world})"
        )
    accum = micro_per_step // world
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, out / "recipe.yaml")
        log.info(
            "spellfix: %s on %s (%s), %d process(es), precision %s%s, global batch %d = %d per device x %d accumulation x %d",
            recipe.name, hardware.name, hardware.device_type, world, precision, " (bf16 weights)" if t.bf16_weights else "",
            t.global_batch_size, per_device, accum, world,
        )

    # ---- data and tokenizer -----------------------------------------------------------------
    queries, corrections = load_training_pairs(recipe.data, seed=t.seed)
    formatter = SourceFormatter(recipe.data)
    # every process annotates the same queries; split the machine's cores between them
    sources = formatter(queries, workers=max(1, (os.cpu_count() or 1) // world), progress=main and progress)
    with accelerator.main_process_first():
        model, tokenizer = _model_and_tokenizer(recipe, out, sources + corrections, main)
    cache_dir = Path(recipe.data.cache_dir) if recipe.data.cache_dir else out / "cache"
    with accelerator.main_process_first():
        tokenized = tokenize_pairs(
            sources, corrections, tokenizer,
            max_source_length=recipe.data.max_source_length,
            max_target_length=recipe.data.max_target_length,
            cache_dir=cache_dir,
        )
    dataset = TokenizedPairs(tokenized)
    src_lens, tgt_lens = dataset.source_lengths, dataset.target_lengths
    dev_rows = load_dev_rows(recipe.data, recipe.eval.limit) if main else []

    def plan(epoch: int):
        return plan_epoch(
            src_lens, tgt_lens,
            global_batch_size=t.global_batch_size,
            micro_batches_per_step=micro_per_step,
            seed=t.seed, epoch=epoch,
            group_by_length=t.batching.group_by_length,
            pool_factor=t.batching.pool_factor,
            max_tokens=t.batching.max_tokens,
            length_key=t.batching.length_key,
        )

    first_plan = plan(0)
    if not first_plan:
        raise ValueError(f"{len(dataset)} training pairs are fewer than one global batch ({t.global_batch_size})")
    steps_per_epoch = len(first_plan)
    total_steps = t.max_steps or max(1, math.ceil(t.epochs * steps_per_epoch))
    if main:
        log.info(
            "spellfix: %d training pairs, %d steps/epoch, %d steps, padding %.1f%% of positions",
            len(dataset), steps_per_epoch, total_steps, 100 * padding_ratio(first_plan, src_lens, tgt_lens),
        )

    # ---- model, optimizer, schedule ---------------------------------------------------------
    # `model` (fp32) is the master: the optimizer updates it, checkpoints save it, evaluation runs
    # it. Forward/backward run through `step_module` = model (or its bf16 copy) + the loss.
    set_attention(model, t.attention)
    model.to(accelerator.device)
    bf16_copy = Bf16ComputeCopy(model) if t.bf16_weights else None
    step_module = Seq2SeqLoss(bf16_copy.compute if bf16_copy else model, t.loss, t.label_smoothing)
    optimizer = build_optimizer(model, t, hardware.device_type)
    scheduler = build_scheduler(optimizer, t, total_steps)
    step_module, optimizer = accelerator.prepare(step_module, optimizer)
    if t.compile:
        step_module = torch.compile(step_module, dynamic=True)
    scaler = getattr(accelerator, "scaler", None)
    unwrapped = model
    padding = t.batching.padding == "max_length"
    collator = PairCollator(
        pad_id=tokenizer.pad_token_id, decoder_start_id=EOS_ID,
        max_source_length=recipe.data.max_source_length if padding else None,
        max_target_length=recipe.data.max_target_length if padding else None,
    )
    pinned = t.batching.pin_memory and hardware.device_type == "cuda"
    if t.host_sync == "log_steps" and scaler is None and not supports_found_inf(optimizer):
        raise ValueError("train.host_sync=log_steps skips non-finite steps inside fused AdamW: set train.fused_adamw to auto or on")

    state = ckpt.TrainerState()
    start = _resume_point(resume, ckpt_dir)
    if start is not None:
        state = ckpt.load_checkpoint(start, model=unwrapped, optimizer=optimizer, scheduler=scheduler, scaler=scaler, rank=rank)
        if main:
            log.info("spellfix: resumed from %s at step %d (epoch %d)", start, state.step, state.epoch)
    if bf16_copy:
        bf16_copy.weights_to_compute()

    from spellfix.telemetry import RunLogger, ThroughputMeter, peak_flops_for, train_flops_per_token

    run_log = RunLogger(
        log_dir, enabled=main,
        sample_interval_s=recipe.telemetry.sample_interval_s,
        tensorboard=recipe.telemetry.tensorboard,
        stdout=recipe.telemetry.stdout,
    )
    if main:
        run_log.log_text("recipe", "```\n" + recipe_to_yaml(recipe) + "```")
    peak = peak_flops_for(hardware.device_type, precision, hardware.name)
    meter = ThroughputMeter(flops_per_token=train_flops_per_token(count_parameters(unwrapped)) / 2, peak_flops=peak)
    # /2: in an encoder-decoder each token runs through one half of the parameters (encoder or decoder).
    guard = NonFiniteGuard(
        t.host_sync, t.max_nonfinite_steps, accelerator.device,
        hint=lambda: f"lower train.lr (now {scaled_lr(t):.3g}), raise train.warmup_steps, or use bf16/fp32 instead of fp16",
    )

    # ---- the loop ---------------------------------------------------------------------------
    recipe_yaml = recipe_to_yaml(recipe)
    started = time.time() - state.elapsed_s
    bar = tqdm(total=total_steps, initial=state.step, disable=not (main and progress), desc="train", unit="step", dynamic_ncols=True)
    best_dir = out / "best" if (out / "best").exists() else None
    last_eval: dict[str, Any] = {}
    stop_reason = "max_steps"

    def save(tag: str = "") -> Path:
        state.elapsed_s = time.time() - started
        path = ckpt.save_checkpoint(
            ckpt_dir, state, model=unwrapped, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
            recipe_yaml=recipe_yaml, rank=rank, world_size=world, barrier=accelerator.wait_for_everyone,
            keep_last=t.keep_last,
        )
        if main:
            log.info("spellfix: saved checkpoint %s%s", path, tag)
        return path

    def evaluate() -> tuple[dict[str, Any], bool]:
        with _eval_autocast(hardware, precision):
            return _evaluate_and_track(recipe, unwrapped, tokenizer, formatter, dev_rows, state, run_log, accelerator)

    step_module.train()
    with StopFlag() as stop, run_log:
        while state.step < total_steps:
            epoch_plan = first_plan if state.epoch == 0 else plan(state.epoch)
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_sampler=MicroBatchSampler(epoch_plan, rank, world, state.step_in_epoch),
                collate_fn=collator,
                num_workers=t.batching.num_workers,
                pin_memory=pinned,
                persistent_workers=False,
            )
            batches = iter(loader)
            for global_batch in epoch_plan[state.step_in_epoch :]:
                meter.step_begin()
                n_local = len(range(rank, len(global_batch.micro_batches), world))
                micro = [_to_device(next(batches), accelerator.device, non_blocking=pinned) for _ in range(n_local)]
                meter.data_ready()

                # forward/backward over this rank's micro-batches; all-reduce on the last one only
                step_loss = torch.zeros((), device=accelerator.device)
                for k, batch in enumerate(micro):
                    with _grad_sync(accelerator, step_module, last=k == len(micro) - 1, enabled=t.ddp_no_sync):
                        loss_sum = step_module(**batch)
                        # Normalise by the whole global batch's target tokens (x world: DDP averages
                        # gradients over ranks) so the gradient is the same for any world size.
                        accelerator.backward(loss_sum * (world / global_batch.target_tokens))
                    step_loss += loss_sum.detach()

                # optimizer step on the fp32 master weights, skipped on every rank alike if the
                # global loss is not finite (a scalar all-reduce: no host sync with NCCL)
                if world > 1:
                    step_loss = accelerator.reduce(step_loss, reduction="sum")
                if bf16_copy:
                    bf16_copy.grads_to_master()
                if t.grad_clip:
                    accelerator.clip_grad_norm_(unwrapped.parameters(), t.grad_clip)
                guard.step(optimizer, step_loss, global_batch.target_tokens, has_scaler=scaler is not None, step=state.step)
                if bf16_copy:
                    bf16_copy.weights_to_compute()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.step_in_epoch += 1
                state.samples_seen += global_batch.size
                meter.step_end(samples=global_batch.size, tokens=global_batch.target_tokens + sum(src_lens[i] for m in global_batch.micro_batches for i in m))
                bar.update(1)

                log_step = state.step % t.log_every == 0 or state.step == total_steps
                if log_step:
                    guard.check(state.step)
                    _log_step(run_log, state, guard, scheduler, meter, accelerator, bar)
                if _stop_requested(stop, accelerator, collective=log_step or t.host_sync == "every_step"):
                    path = save(" (SIGTERM)")
                    bar.close()
                    raise Preempted(str(path))
                if t.eval_every and state.step % t.eval_every == 0 and state.step < total_steps:
                    last_eval, improved = evaluate()
                    if improved and main:
                        best_dir = _save_model(unwrapped, tokenizer, recipe, formatter, out / "best", last_eval)
                    if t.early_stopping_patience and state.evals_without_improvement >= t.early_stopping_patience:
                        stop_reason = "early_stopping"
                if t.save_every and state.step % t.save_every == 0 and state.step < total_steps:
                    save()
                if t.max_minutes and time.time() - started > 60 * t.max_minutes:
                    stop_reason = "max_minutes"
                if stop_reason != "max_steps" or state.step >= total_steps:
                    break
            else:
                state.epoch += 1
                state.step_in_epoch = 0
                continue
            break

        bar.close()
        save(f" (final, {stop_reason})")
        last_eval, improved = evaluate()
        final_dir = None
        if main:
            if improved:
                best_dir = _save_model(unwrapped, tokenizer, recipe, formatter, out / "best", last_eval)
            final_dir = _save_model(unwrapped, tokenizer, recipe, formatter, out / "final", last_eval)
        accelerator.wait_for_everyone()
    elapsed = time.time() - started
    if main:
        log.info("spellfix: done in %.1f min (%s); final model in %s", elapsed / 60, stop_reason, final_dir)
    return TrainResult(out, final_dir, best_dir, last_eval, state.step, elapsed)


# ------------------------------------------------------------------------------- option pieces


def check_throughput_options(t: TrainConfig, precision: str) -> None:
    """Reject option combinations that cannot work, naming the recipe keys to change."""
    if t.bf16_weights and precision != "bf16":
        raise HardwareError(
            f"train.bf16_weights=true needs bf16 (train.precision resolved to {precision}); on GPUs without bf16 "
            "(V100) use fp16 autocast: set train.bf16_weights=false"
        )
    if t.host_sync == "log_steps" and t.fused_adamw == "off":
        raise ValueError("train.host_sync=log_steps skips non-finite steps inside fused AdamW: set train.fused_adamw to auto or on")


def _new_accelerator(mixed_precision: str, cpu: bool) -> Accelerator:
    """accelerate keeps one process-wide AcceleratorState that refuses a second, different
    precision; a later ``train()`` in the same process (tests, benchmarks, notebooks) starts from a
    fresh one. The distributed PartialState (process group) is kept."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def set_attention(model: torch.nn.Module, kind: str) -> None:
    """``train.attention``: keep the model's attention kernel (auto) or pick sdpa/eager."""
    if kind != "auto":
        model.set_attn_implementation(kind)


def _grad_sync(accelerator: Accelerator, module: torch.nn.Module, *, last: bool, enabled: bool):
    """``train.ddp_no_sync``: no gradient all-reduce on non-final micro-batches of a step."""
    if last or not enabled:
        return contextlib.nullcontext()
    return accelerator.no_sync(module)


def _eval_autocast(hardware: Hardware, precision: str):
    """Evaluation generates with the fp32 master under the training precision's autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(hardware.device_type, dtype=AUTOCAST_DTYPE[precision])


# ------------------------------------------------------------------------------------ helpers


def _model_and_tokenizer(recipe: Recipe, out: Path, texts: list[str], main: bool):
    """Fine-tune a pretrained model, or build one from config with a BPE trained on the corpus.

    The trained tokenizer is saved in OUT/tokenizer and reused on resume (same ids guaranteed).
    """
    m = recipe.model
    torch.manual_seed(recipe.train.seed)
    if m.name_or_path:
        model, tokenizer = load_pretrained(m.name_or_path, dropout=m.dropout)
        set_generation_defaults(model, recipe.eval.max_new_tokens)
        return model, tokenizer
    tok_dir = out / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        tokenizer = load_tokenizer(tok_dir)
    else:
        if not main:
            raise RuntimeError(f"{tok_dir} missing on a non-main process")
        tokenizer = train_byte_bpe_tokenizer(texts, m.tokenizer.vocab_size, m.tokenizer.min_frequency)
        tokenizer.save_pretrained(tok_dir)
        tokenizer = load_tokenizer(tok_dir)
    torch.manual_seed(recipe.train.seed)
    model = build_model(m, len(tokenizer))
    set_generation_defaults(model, recipe.eval.max_new_tokens)
    return model, tokenizer


def _resume_point(resume: str, ckpt_dir: Path) -> Path | None:
    if resume == "never":
        return None
    if resume == "auto":
        return ckpt.latest_complete(ckpt_dir)
    path = Path(resume)
    if not (path / ckpt.STATE_FILE).exists():
        raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint directory")
    return path


def _to_device(batch: dict[str, torch.Tensor], device: torch.device, non_blocking: bool) -> dict[str, torch.Tensor]:
    """Host -> device copy; non_blocking only from pinned memory (else it is synchronous anyway)."""
    return {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}


def _stop_requested(stop: StopFlag, accelerator: Accelerator, collective: bool) -> bool:
    """All ranks must agree to stop at the same step, or the checkpoint's collectives would hang.

    The agreement is a collective + host sync, so with ``host_sync=log_steps`` it runs at log steps
    only (``collective=False`` elsewhere); one process needs no agreement.
    """
    if accelerator.num_processes == 1:
        return stop.requested
    if not collective:
        return False
    flag = torch.tensor([1.0 if stop.requested else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


def _log_step(run_log, state, guard: NonFiniteGuard, scheduler, meter, accelerator, bar) -> dict:
    window_loss, window_tokens = guard.pop_window()  # global sums, the same on every rank
    loss = window_loss.item() / max(1.0, window_tokens.item())
    metrics = {"loss": loss, "lr": scheduler.get_last_lr()[0], "epoch": state.epoch, **meter.pop()}
    bar.set_postfix(loss=f"{loss:.3f}", sps=f"{metrics.get('samples_per_s', 0):.1f}")
    return run_log.log(state.step, metrics)


def _evaluate_and_track(recipe, model, tokenizer, formatter, dev_rows, state, run_log, accelerator) -> tuple[dict, bool]:
    """Generate on the dev rows (main process), log eval/* metrics, track the best score."""
    improved = False
    metrics: dict[str, Any] = {}
    if accelerator.is_main_process and dev_rows:
        metrics = evaluate_rows(model, tokenizer, formatter, dev_rows, recipe)
        run_log.log(state.step, {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        score = metrics.get(recipe.eval.metric)
        if score is not None and (state.best_metric is None or score > state.best_metric):
            state.best_metric, state.best_step, improved = score, state.step, True
            state.evals_without_improvement = 0
        else:
            state.evals_without_improvement += 1
        state.history.append({"step": state.step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
    accelerator.wait_for_everyone()
    return metrics, improved


@torch.no_grad()
def generate_corrections(model, tokenizer, sources: list[str], *, max_source_length: int, batch_size: int, num_beams: int, max_new_tokens: int) -> list[str]:
    """Greedy/beam generation in length-sorted batches (used for evaluation during training)."""
    from spellfix.modeling import encode_sources

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[str] = [""] * len(sources)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        ids = encode_sources(tokenizer, [sources[i] for i in idx], max_source_length)
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), PAD_ID, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for r, x in enumerate(ids):
            input_ids[r, : len(x)] = torch.tensor(x)
            mask[r, : len(x)] = 1
        gen = model.generate(
            input_ids=input_ids.to(device), attention_mask=mask.to(device),
            num_beams=num_beams, max_new_tokens=max_new_tokens, do_sample=False,
        )
        texts = tokenizer.batch_decode(gen, skip_special_tokens=True)
        for i, text in zip(idx, texts):
            out[i] = " ".join(text.split())
    if was_training:
        model.train()
    return out


def evaluate_rows(model, tokenizer, formatter, rows: list[dict[str, str]], recipe: Recipe) -> dict[str, Any]:
    from spellfix.evaluation import compute_metrics

    queries = [r["query"] for r in rows]
    preds = generate_corrections(
        model, tokenizer, formatter(queries),
        max_source_length=recipe.data.max_source_length, batch_size=recipe.eval.batch_size,
        num_beams=recipe.eval.num_beams, max_new_tokens=recipe.eval.max_new_tokens,
    )
    metrics = compute_metrics(queries, preds, [r["correction"] for r in rows])
    metrics["score"] = metrics["exact_match"]
    return metrics


def _save_model(model, tokenizer, recipe, formatter, path: Path, metrics: dict) -> Path:
    import json

    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float, dict))}
    return save_model_dir(
        model, tokenizer, path,
        settings=input_settings(recipe.data.max_source_length, formatter.settings()),
        extra_files={"recipe.yaml": recipe_to_yaml(recipe), "metrics.json": json.dumps(numeric, indent=2, default=str) + "\n"},
    )
