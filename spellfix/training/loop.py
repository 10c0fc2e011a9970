"""The training loop: setup, one step function, the cadences — readable top to bottom.

setup (hardware checks, processes, tokenizer, data, model + :class:`~spellfix.training.step.TrainStep`)
→ resume → for each planned global batch: ``step.step(...)`` → the cadences (log, evaluate, save)
→ the stop decision, agreed by every rank at the same step (``spellfix.training.stopping``) → one
checkpoint → final model, or a clean exit on every rank. accelerate sets up the processes and wraps
DDP; the arithmetic of a step lives in ``spellfix.training.step`` (the benchmarks time the same one).

Throughput options are small named pieces, each switchable from the recipe (docs/training.md has
their measured effect): length grouping / dynamic padding / token budgets (``train.batching``,
spellfix.data.batching), the fused LM head + loss (``train.loss``, spellfix.training.loss), bf16
compute weights with fp32 masters (``train.bf16_weights``, spellfix.training.precision), fused
AdamW (``train.fused_adamw``), ``train.compile``, ``train.attention``, DataLoader workers + pinned
memory + non-blocking copies, a CPU heap that keeps freed memory between steps
(``train.cpu_allocator``, spellfix.training.allocator), no host sync between log steps (``train.host_sync``,
spellfix.training.nonfinite) and ``no_sync`` during accumulation (``train.ddp_no_sync``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from spellfix.config import Recipe, TrainConfig, load_recipe, recipe_to_yaml, save_recipe
from spellfix.data.batching import GlobalBatch, MicroBatchSampler, PairCollator, padding_ratio, plan_epoch
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
from spellfix.training.allocator import cpu_heap
from spellfix.training.hardware import Hardware, HardwareError, check_hardware
from spellfix.training.nonfinite import NonFiniteLossError, supports_found_inf
from spellfix.training.optim import scaled_lr
from spellfix.training.signals import Preempted, StopFlag
from spellfix.training.step import AUTOCAST_DTYPE, TrainStep
from spellfix.training.stopping import Budget, Votes, agree

log = logging.getLogger(__name__)

__all__ = ["NonFiniteLossError", "TrainResult", "train"]


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path | None
    best_dir: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    elapsed_s: float = 0.0
    #: max_steps (done), early_stopping (done), or max_minutes (this invocation's budget is spent:
    #: run the same command with --resume auto to continue to ``total_steps``)
    stop_reason: str = "max_steps"
    total_steps: int = 0

    @property
    def complete(self) -> bool:
        return self.stop_reason != "max_minutes"


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
    starts fresh, or a checkpoint path. Runs the same under ``accelerate launch`` / ``torchrun`` with
    N processes: the global batch stays ``train.global_batch_size``; only rank 0 writes logs,
    checkpoints and models; every stop (max_steps, early stopping, ``max_minutes``, a non-finite
    loss, SIGTERM/SIGINT) happens on all ranks at the same step after one checkpoint.
    ``train.max_minutes`` is this call's budget: the run stops with ``stop_reason="max_minutes"``
    (final/ holds the weights so far) and a later call with ``resume="auto"`` continues the same
    schedule to ``max_steps``. Raises :class:`Preempted` after saving on SIGTERM/SIGINT and
    :class:`NonFiniteLossError` after saving the last good weights.
    """
    invocation_start = time.monotonic()  # max_minutes is this call's budget, setup included
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    t = recipe.train
    budget = Budget(t.max_minutes, started=invocation_start)
    out = Path(output_dir or f"runs/{recipe.name}")
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else out / "checkpoints"

    # ---- setup: hardware, processes, data, model, the step -----------------------------------
    hardware, precision = check_hardware(t.precision)
    check_throughput_options(t, precision)
    accelerator = _new_accelerator(cpu=hardware.device_type == "cpu")
    procs = _Processes.of(accelerator, t)
    if procs.main:
        out.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, out / "recipe.yaml")
        log.info(
            "spellfix: %s on %s (%s), %d process(es), precision %s%s, global batch %d = %d per device x %d accumulation x %d",
            recipe.name, hardware.name, hardware.device_type, procs.world, precision, " (bf16 weights)" if t.bf16_weights else "",
            t.global_batch_size, procs.per_device, procs.accum, procs.world,
        )
    data = _Data.load(recipe, out, accelerator, procs, progress)
    total_steps = t.max_steps or max(1, math.ceil(t.epochs * data.steps_per_epoch))
    if procs.main:
        log.info(
            "spellfix: %d training pairs, %d steps/epoch, %d steps, padding %.1f%% of positions",
            len(data.dataset), data.steps_per_epoch, total_steps,
            100 * padding_ratio(data.plan(0), data.dataset.source_lengths, data.dataset.target_lengths),
        )
    model = data.model
    set_attention(model, t.attention)
    model.to(accelerator.device)
    step = TrainStep(
        model, t, precision=precision, device=accelerator.device, total_steps=total_steps, world=procs.world,
        wrap=accelerator.prepare_model if procs.world > 1 else None,
        hint=lambda: f"lower train.lr (now {scaled_lr(t):.3g}), raise train.warmup_steps, or use bf16/fp32 instead of fp16",
    )
    if t.host_sync == "log_steps" and step.scaler is None and not supports_found_inf(step.optimizer):
        raise ValueError("train.host_sync=log_steps skips non-finite steps inside fused AdamW: set train.fused_adamw to auto or on")
    state, resumed_from = _restore(resume, ckpt_dir, step, procs)
    saved_step = state.step if resumed_from else -1
    if state.stop_reason == "early_stopping" and procs.main:
        log.info("spellfix: this run stopped early at step %d (no dev improvement); nothing more to train", state.step)

    from spellfix.telemetry import RunLogger, ThroughputMeter, peak_flops_for, train_flops_per_token

    run_log = RunLogger(
        Path(logdir) if logdir else out / "logs", enabled=procs.main,
        sample_interval_s=recipe.telemetry.sample_interval_s,
        tensorboard=recipe.telemetry.tensorboard, stdout=recipe.telemetry.stdout,
    )
    recipe_yaml = recipe_to_yaml(recipe)
    if procs.main:
        run_log.log_text("recipe", "```\n" + recipe_yaml + "```")
    # /2: in an encoder-decoder each token runs through one half of the parameters (encoder or decoder).
    meter = ThroughputMeter(
        flops_per_token=train_flops_per_token(count_parameters(model)) / 2,
        peak_flops=peak_flops_for(hardware.device_type, precision, hardware.name),
    )
    started = time.time() - state.elapsed_s  # training time over all invocations (reporting only)
    best_dir = out / "best" if (out / "best").exists() else None
    last_eval: dict[str, Any] = {}

    def save(tag: str) -> Path:
        nonlocal saved_step
        state.elapsed_s = time.time() - started
        path = ckpt.save_checkpoint(
            ckpt_dir, state, model=model, states=step.state_dicts(), recipe_yaml=recipe_yaml,
            rank=procs.rank, world_size=procs.world, keep_last=t.keep_last,
        )
        saved_step = state.step
        if procs.main:
            log.info("spellfix: saved checkpoint %s%s", path, tag)
        return path

    def evaluate() -> tuple[dict[str, Any], bool]:
        with _eval_autocast(hardware, precision):
            return _evaluate_and_track(recipe, model, data, state, run_log, accelerator)

    # ---- the loop: a step, then the cadences, then the agreed stop decision ------------------
    bar = tqdm(total=total_steps, initial=state.step, disable=not (procs.main and progress), desc="train", unit="step", dynamic_ncols=True)
    reason: str | None = None if state.stop_reason != "early_stopping" else "early_stopping"
    with StopFlag() as signals, run_log, cpu_heap(t.cpu_allocator, hardware.device_type):
        batches = _global_batches(data, state, procs, t, accelerator.device)
        while reason is None and state.step < total_steps:
            meter.step_begin()
            global_batch, micro = next(batches)
            meter.data_ready()
            step.step(micro, global_batch.target_tokens)
            state.step += 1
            state.step_in_epoch += 1
            state.samples_seen += global_batch.size
            meter.step_end(samples=global_batch.size, tokens=_tokens(global_batch, data.dataset))
            bar.update(1)

            at_end = state.step >= total_steps
            log_step = state.step % t.log_every == 0 or at_end
            eval_step = bool(t.eval_every) and state.step % t.eval_every == 0 and not at_end
            save_step = bool(t.save_every) and state.step % t.save_every == 0 and not at_end
            if log_step:
                _log_step(run_log, state, step, meter, bar)
            if eval_step:
                last_eval, improved = evaluate()
                if improved and procs.main:
                    best_dir = _save_model(model, data, recipe, out / "best", last_eval)
            if save_step:
                save("")
            if not at_end and (t.host_sync == "every_step" or log_step or eval_step or save_step):
                reason = agree(Votes(
                    signal=signals.requested,
                    non_finite=step.guard.exhausted(),
                    early_stopping=procs.main and bool(t.early_stopping_patience)
                    and state.evals_without_improvement >= t.early_stopping_patience,
                    max_minutes=budget.spent(),
                ), procs.world, accelerator.device)
        bar.close()

        # ---- the stop: one checkpoint, then final models or a clean exit on every rank --------
        state.stop_reason = reason or "max_steps"
        if reason == "non_finite":
            save(" (non-finite loss: the last good weights)")
            raise step.guard.error(state.step)
        if reason == "signal":
            name = signal.Signals(signals.signum).name if signals.signum else "a signal to another rank"
            raise Preempted(str(save(f" ({name})")), signals.signum)
        if state.step != saved_step:
            save(f" (final, {state.stop_reason})")
        last_eval, improved = evaluate()
        final_dir = None
        if procs.main:
            if improved:
                best_dir = _save_model(model, data, recipe, out / "best", last_eval)
            final_dir = _save_model(model, data, recipe, out / "final", last_eval)
        accelerator.wait_for_everyone()
    elapsed = time.time() - started
    if procs.main:
        log.info("spellfix: stopped at step %d of %d (%s) after %.1f min of training; final model in %s",
                 state.step, total_steps, state.stop_reason, elapsed / 60, final_dir)
        if state.stop_reason == "max_minutes":
            log.info("spellfix: train.max_minutes=%s spent: run the same command with --resume auto to continue to step %d",
                     t.max_minutes, total_steps)
    return TrainResult(out, final_dir, best_dir, last_eval, state.step, elapsed, state.stop_reason, total_steps)


# ------------------------------------------------------------------------------------- setup


@dataclass(frozen=True)
class _Processes:
    """This process's place in the job and the batch layout it implies."""

    rank: int
    world: int
    main: bool
    per_device: int
    accum: int
    micro_per_step: int  # fixed whatever the world size (see batching.py)

    @classmethod
    def of(cls, accelerator: Accelerator, t: TrainConfig) -> "_Processes":
        world = accelerator.num_processes
        per_device = t.per_device_batch_size or t.global_batch_size // world
        micro_per_step = t.global_batch_size // max(1, per_device)
        if not per_device or t.global_batch_size % per_device or micro_per_step % world:
            raise ValueError(
                f"train.global_batch_size={t.global_batch_size} must be a multiple of per_device_batch_size "
                f"({per_device}) x world size ({world})"
            )
        return cls(accelerator.process_index, world, accelerator.is_main_process, per_device, micro_per_step // world, micro_per_step)


@dataclass
class _Data:
    """Tokenizer, formatter, tokenized pairs, the epoch plans and the dev rows (main process)."""

    recipe: Recipe
    procs: _Processes
    model: torch.nn.Module
    tokenizer: Any
    formatter: SourceFormatter
    dataset: TokenizedPairs
    dev_rows: list[dict[str, str]]
    collator: PairCollator
    steps_per_epoch: int = 0
    _first_plan: list[GlobalBatch] | None = None

    @classmethod
    def load(cls, recipe: Recipe, out: Path, accelerator: Accelerator, procs: _Processes, progress: bool) -> "_Data":
        queries, corrections = load_training_pairs(recipe.data, seed=recipe.train.seed)
        formatter = SourceFormatter(recipe.data)
        # every process annotates the same queries; split the machine's cores between them
        sources = formatter(queries, workers=max(1, (os.cpu_count() or 1) // procs.world), progress=procs.main and progress)
        with accelerator.main_process_first():
            model, tokenizer = _model_and_tokenizer(recipe, out, sources + corrections, procs.main)
        cache_dir = Path(recipe.data.cache_dir) if recipe.data.cache_dir else out / "cache"
        with accelerator.main_process_first():
            tokenized = tokenize_pairs(
                sources, corrections, tokenizer,
                max_source_length=recipe.data.max_source_length, max_target_length=recipe.data.max_target_length,
                cache_dir=cache_dir,
            )
        padding = recipe.train.batching.padding == "max_length"
        collator = PairCollator(
            pad_id=tokenizer.pad_token_id, decoder_start_id=EOS_ID,
            max_source_length=recipe.data.max_source_length if padding else None,
            max_target_length=recipe.data.max_target_length if padding else None,
        )
        data = cls(recipe, procs, model, tokenizer, formatter, TokenizedPairs(tokenized),
                   load_dev_rows(recipe.data, recipe.eval.limit) if procs.main else [], collator)
        first = data.plan(0)
        if not first:
            raise ValueError(f"{len(data.dataset)} training pairs are fewer than one global batch ({recipe.train.global_batch_size})")
        data.steps_per_epoch = len(first)
        return data

    def plan(self, epoch: int) -> list[GlobalBatch]:
        t = self.recipe.train
        if epoch == 0 and self._first_plan is not None:
            return self._first_plan
        plan = plan_epoch(
            self.dataset.source_lengths, self.dataset.target_lengths,
            global_batch_size=t.global_batch_size, micro_batches_per_step=self.procs.micro_per_step,
            seed=t.seed, epoch=epoch,
            group_by_length=t.batching.group_by_length, pool_factor=t.batching.pool_factor,
            max_tokens=t.batching.max_tokens, length_key=t.batching.length_key,
        )
        if epoch == 0:
            self._first_plan = plan
        return plan


def _global_batches(data: _Data, state: ckpt.TrainerState, procs: _Processes, t: TrainConfig,
                    device: torch.device) -> Iterator[tuple[GlobalBatch, list[dict[str, torch.Tensor]]]]:
    """This rank's micro-batches of each planned global batch, from ``state``'s position on; the
    epoch advances (in ``state``) when the next batch is asked for after an epoch's last one."""
    pinned = t.batching.pin_memory and device.type == "cuda"
    while True:
        epoch_plan = data.plan(state.epoch)
        loader = torch.utils.data.DataLoader(
            data.dataset,
            batch_sampler=MicroBatchSampler(epoch_plan, procs.rank, procs.world, state.step_in_epoch),
            collate_fn=data.collator, num_workers=t.batching.num_workers, pin_memory=pinned, persistent_workers=False,
        )
        loaded = iter(loader)
        for global_batch in epoch_plan[state.step_in_epoch :]:
            n_local = len(range(procs.rank, len(global_batch.micro_batches), procs.world))
            yield global_batch, [_to_device(next(loaded), device, non_blocking=pinned) for _ in range(n_local)]
        state.epoch += 1
        state.step_in_epoch = 0


def _tokens(global_batch: GlobalBatch, dataset: TokenizedPairs) -> int:
    """Non-pad source + target tokens of a global batch (throughput accounting)."""
    src = dataset.source_lengths
    return global_batch.target_tokens + sum(src[i] for m in global_batch.micro_batches for i in m)


def _restore(resume: str, ckpt_dir: Path, step: TrainStep, procs: _Processes) -> tuple[ckpt.TrainerState, Path | None]:
    """Load the resume point into the step; every rank must see the same one (multi-node jobs need
    the checkpoint directory on a filesystem all nodes share), else a clear error on every rank."""
    start = _resume_point(resume, ckpt_dir)
    if procs.world > 1:
        seen: list[str | None] = [None] * procs.world
        torch.distributed.all_gather_object(seen, start.name if start else None)
        if len(set(seen)) > 1:
            raise RuntimeError(
                f"the ranks see different checkpoints in {ckpt_dir} ({', '.join(f'rank {r}: {s}' for r, s in enumerate(seen))}): "
                "with several nodes the checkpoint directory must be on a filesystem they all share"
            )
    if start is None:
        return ckpt.TrainerState(), None
    state, states = ckpt.load_checkpoint(start, model=step.model, rank=procs.rank)
    step.load_state_dicts(states)
    if state.world_size != procs.world and procs.main:
        log.info("spellfix: checkpoint written by %d process(es), resumed by %d (same global batch)", state.world_size, procs.world)
    if procs.main:
        log.info("spellfix: resumed from %s at step %d (epoch %d)", start, state.step, state.epoch)
    return state, start


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


def _new_accelerator(cpu: bool) -> Accelerator:
    """accelerate sets up the processes and wraps DDP; precision is the step's job (autocast and
    GradScaler in spellfix.training.step). accelerate keeps one process-wide AcceleratorState; a
    later ``train()`` in the same process (tests, benchmarks, notebooks) starts from a fresh one.
    The distributed PartialState (process group) is kept."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(mixed_precision="no", cpu=cpu)


def set_attention(model: torch.nn.Module, kind: str) -> None:
    """``train.attention``: keep the model's attention kernel (auto) or pick sdpa/eager."""
    if kind != "auto":
        model.set_attn_implementation(kind)


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


def _log_step(run_log, state: ckpt.TrainerState, step: TrainStep, meter, bar) -> dict:
    window_loss, window_tokens = step.guard.pop_window()  # global sums, the same on every rank
    loss = window_loss.item() / max(1.0, window_tokens.item())
    metrics = {"loss": loss, "lr": step.scheduler.get_last_lr()[0], "epoch": state.epoch, **meter.pop()}
    if step.scaler is not None:
        metrics["loss_scale"] = step.loss_scale()
    bar.set_postfix(loss=f"{loss:.3f}", sps=f"{metrics.get('samples_per_s', 0):.1f}")
    return run_log.log(state.step, metrics)


def _evaluate_and_track(recipe, model, data: _Data, state, run_log, accelerator) -> tuple[dict, bool]:
    """Generate on the dev rows (main process), log eval/* metrics, track the best score. Only the
    main process's state knows the score: early stopping reaches the other ranks by the stop vote."""
    improved = False
    metrics: dict[str, Any] = {}
    if accelerator.is_main_process and data.dev_rows:
        metrics = evaluate_rows(model, data.tokenizer, data.formatter, data.dev_rows, recipe)
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


def _save_model(model, data: _Data, recipe, path: Path, metrics: dict) -> Path:
    import json

    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float, dict))}
    return save_model_dir(
        model, data.tokenizer, path,
        settings=input_settings(recipe.data.max_source_length, data.formatter.settings()),
        extra_files={"recipe.yaml": recipe_to_yaml(recipe), "metrics.json": json.dumps(numeric, indent=2, default=str) + "\n"},
    )
