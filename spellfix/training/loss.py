"""The training loss of a seq2seq model, in two interchangeable forms (``train.loss``).

``full-logits``: what ``model(...).logits`` + ``F.cross_entropy`` does — materialise the logits of
*every* decoder position (padding included) over the whole vocabulary, upcast them to fp32, then
log-softmax, and keep all of it alive for the backward pass. For bart-base (50,265 tokens) at batch
256 that is hundreds of MB of fp32 traffic per step, most of it for a handful of label tokens.

``fused-head``: run the model body only (encoder + decoder, no LM head), keep the decoder states of
the *non-pad target positions*, and compute LM head + cross-entropy in row chunks whose gradient is
produced on the spot (the "fused linear cross-entropy" of Liger-Kernel, here in plain PyTorch): no
fp32 full-vocabulary logits tensor ever exists, nothing of size ``tokens x vocab`` is saved for
backward, and padded positions cost nothing. Same value and gradient as ``full-logits`` up to float rounding
(tests/test_throughput_options.py checks both).

Both return the *sum* of per-token losses; the loop divides by the global batch's target tokens.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

LossKind = Literal["full-logits", "fused-head"]

#: Logit rows per chunk of the fused head: each chunk's fp32 logits ([rows, vocab], 51 MB for bart-base)
#: are turned into their gradient in place. The matmuls dominate: on the bart-base head (1536 tokens,
#: bf16, 2 CPU threads) chunks of 64 to 1536 rows timed within 5 % of each other, so the chunk is
#: sized for memory, not speed.
CHUNK_ROWS = 256


def _chunk_logits(h: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, acc: torch.dtype) -> torch.Tensor:
    logits = torch.mm(h, w.t()).to(acc)
    if bias is not None:
        logits += bias.to(acc)
    return logits


def _softmax_loss_(z: torch.Tensor, y: torch.Tensor, smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss of the logits ``z`` [rows, V] (fp32) against ``y`` [rows, 1], and the per-row
    softmax normaliser ``s``; ``z`` is overwritten in place with exp(z - max), so no temporaries of
    the logits' size exist (``torch.logsumexp`` would allocate two more)."""
    m = z.amax(dim=1, keepdim=True)
    target = z.gather(1, y)
    mean = z.mean(dim=1, keepdim=True) if smoothing else None
    s = z.sub_(m).exp_().sum(dim=1, keepdim=True)
    lse = m + s.log()
    nll = lse - target
    if mean is not None:
        nll = (1 - smoothing) * nll + smoothing * (lse - mean)
    return nll.sum(), s


def _logit_grad_into(z: torch.Tensor, s: torch.Tensor, y: torch.Tensor, smoothing: float, out: torch.Tensor,
                     scale: torch.Tensor | float = 1.0) -> None:
    """``out`` = scale * (softmax - (1 - eps) onehot(y) - eps / V), from ``z`` = exp(z - max) and its
    row sums ``s`` (:func:`_softmax_loss_`). Formed in fp32 and rounded once into ``out`` (the
    compute dtype); ``scale`` (fp16's incoming gradient, which carries the loss scale) applies
    before the rounding."""
    # the onehot term: subtract (1 - eps) * s at the label before dividing by s
    z.scatter_add_(1, y, -(1.0 - smoothing) * s)
    offset = torch.as_tensor(-smoothing / z.size(1), dtype=z.dtype, device=z.device) * scale
    torch.addcmul(offset, z, s.reciprocal() * scale, out=out)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(h_i @ W^T + b, y_i) with label smoothing; gradients computed in the forward pass.

    The loss is a scalar and the only consumer of its inputs, so d(loss)/dh and d(loss)/dW are formed
    in the forward pass and merely scaled by the incoming gradient in ``backward``. Logits are formed
    in the dtype of ``hidden`` (bf16 under mixed precision), reduced in fp32 chunk by chunk, and their
    gradient is rounded to the compute dtype into one [tokens, V] block; then one matmul each gives
    d(loss)/dh and d(loss)/dW — the arithmetic of autocast's ``F.linear`` + fp32 cross-entropy (bf16
    matmuls, fp32 softmax), without fp32 tokens x vocab tensors or padded positions. For bf16/fp32
    only: the logit gradients are rounded before the incoming gradient (fp16's loss scale) is known,
    which bf16's range tolerates and fp16's does not (see :class:`_RecomputedLinearCrossEntropy`).
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor,
                smoothing: float, chunk_rows: int) -> torch.Tensor:
        w = weight.detach().to(hidden.dtype)
        hidden = hidden.detach()
        acc = torch.promote_types(hidden.dtype, torch.float32)  # reductions in fp32 (fp64 stays fp64)
        grad_logits = torch.empty((hidden.size(0), w.size(0)), dtype=hidden.dtype, device=hidden.device)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        for start in range(0, hidden.size(0), chunk_rows):
            rows = slice(start, start + chunk_rows)
            logits, y = _chunk_logits(hidden[rows], w, bias, acc), labels[rows, None]
            loss, norm = _softmax_loss_(logits, y, smoothing)
            _logit_grad_into(logits, norm, y, smoothing, grad_logits[rows])
            total += loss
            del logits
        ctx.grad_hidden = torch.mm(grad_logits, w)
        # (h^T g)^T rather than g^T h: the same product, read row-major (measured ~7 % faster on CPU)
        ctx.grad_weight = (
            torch.mm(hidden.t(), grad_logits).t().to(weight.dtype, memory_format=torch.contiguous_format)
            if weight.requires_grad else None
        )
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        gh, gw = ctx.grad_hidden, ctx.grad_weight
        del ctx.grad_hidden, ctx.grad_weight  # used once: scaled in place, no second copy of W's size
        gh = gh.mul_(grad_output.to(gh.dtype))
        gw = gw.mul_(grad_output.to(gw.dtype)) if gw is not None else None
        return gh, gw, None, None, None, None


class _RecomputedLinearCrossEntropy(torch.autograd.Function):
    """The same loss for fp16: logits are recomputed chunk by chunk in ``backward``, where the
    incoming gradient (which carries GradScaler's loss scale) multiplies the logit gradients
    *before* they are rounded to fp16 — exactly what autocast + ``F.cross_entropy`` do, so small
    gradients do not underflow. Costs one more LM-head matmul than the forward-gradient variant;
    still never stores ``tokens x vocab`` logits.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor,
                smoothing: float, chunk_rows: int) -> torch.Tensor:
        w = weight.detach().to(hidden.dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.size(0), chunk_rows):
            rows = slice(start, start + chunk_rows)
            total += _softmax_loss_(_chunk_logits(hidden[rows], w, bias, torch.float32), labels[rows, None], smoothing)[0]
        ctx.save_for_backward(hidden.detach(), weight.detach(), bias if bias is not None else torch.empty(0), labels)
        ctx.has_bias, ctx.smoothing, ctx.chunk_rows = bias is not None, smoothing, chunk_rows
        ctx.weight_requires_grad = weight.requires_grad
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        hidden, weight, bias, labels = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        w = weight.to(hidden.dtype)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if ctx.weight_requires_grad else None
        for start in range(0, hidden.size(0), ctx.chunk_rows):
            rows = slice(start, start + ctx.chunk_rows)
            h, y = hidden[rows], labels[rows, None]
            logits = _chunk_logits(h, w, bias, torch.float32)
            _, norm = _softmax_loss_(logits, y, ctx.smoothing)
            grad = torch.empty(logits.shape, dtype=hidden.dtype, device=hidden.device)
            _logit_grad_into(logits, norm, y, ctx.smoothing, grad, scale=grad_output)  # scaled first, then rounded
            grad_hidden[rows] = torch.mm(grad, w)
            if grad_weight is not None:
                grad_weight += torch.mm(grad.t(), h)
        return grad_hidden, (grad_weight.to(weight.dtype) if grad_weight is not None else None), None, None, None, None


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                               bias: torch.Tensor | None = None, label_smoothing: float = 0.0,
                               chunk_rows: int | None = None) -> torch.Tensor:
    """Summed cross-entropy of ``hidden @ weight.T (+ bias)`` against ``labels`` (rows = tokens).

    ``hidden``: [N, d] (real target positions only), ``weight``: [V, d], ``labels``: [N] in [0, V).
    Under autocast the head runs in the autocast dtype, as ``nn.Linear`` would; in fp16 the
    gradients are formed in backward (loss scaling), otherwise in the forward pass.
    """
    if hidden.dim() != 2 or labels.shape != hidden.shape[:1]:
        raise ValueError(f"hidden must be [N, d] and labels [N], got {tuple(hidden.shape)} and {tuple(labels.shape)}")
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        hidden = hidden.to(torch.get_autocast_dtype(device_type))
    rows = chunk_rows or CHUNK_ROWS
    function = _RecomputedLinearCrossEntropy if hidden.dtype == torch.float16 else _FusedLinearCrossEntropy
    with torch.autocast(device_type, enabled=False):
        return function.apply(hidden, weight, bias, labels, float(label_smoothing), rows)


class Seq2SeqLoss(torch.nn.Module):
    """``forward(batch) -> summed token loss``: the model and its loss as one module.

    Wrapping the loss together with the model lets DDP and ``torch.compile`` see the whole step
    (the fused head must run inside the DDP-wrapped forward for its weight gradient to be
    all-reduced). ``fused-head`` needs the BART layout (``model.model`` body, tied ``lm_head``,
    ``final_logits_bias``) shared by Bart/MBart — the architectures spellfix builds and loads.
    """

    def __init__(self, model: torch.nn.Module, kind: LossKind = "fused-head", label_smoothing: float = 0.0):
        super().__init__()
        if kind == "fused-head" and not _has_bart_head(model):
            raise ValueError(
                f"train.loss=fused-head needs a BART-style model (body + lm_head + final_logits_bias); "
                f"{type(model).__name__} is not one: set train.loss=full-logits"
            )
        self.model, self.kind, self.label_smoothing = model, kind, float(label_smoothing)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, decoder_input_ids: torch.Tensor,
                labels: torch.Tensor, label_positions: torch.Tensor | None = None, **_: torch.Tensor) -> torch.Tensor:
        """Summed loss over real label tokens. ``label_positions`` (flat indices of labels != -100,
        from :class:`~spellfix.data.batching.PairCollator`) avoids a device->host sync."""
        if self.kind == "full-logits":
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # the fp32 upcast
            return F.cross_entropy(
                logits.view(-1, logits.size(-1)), labels.view(-1),
                ignore_index=-100, reduction="sum", label_smoothing=self.label_smoothing,
            )
        hidden = self.model.model(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids, use_cache=False,
        ).last_hidden_state
        if label_positions is None:
            label_positions = (labels.view(-1) != -100).nonzero().view(-1)
        return fused_linear_cross_entropy(
            hidden.reshape(-1, hidden.size(-1)).index_select(0, label_positions),
            self.model.lm_head.weight,
            labels.view(-1).index_select(0, label_positions),
            bias=self.model.final_logits_bias[0], label_smoothing=self.label_smoothing,
        )


def _has_bart_head(model: torch.nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("model", "lm_head", "final_logits_bias")) and getattr(model.lm_head, "bias", None) is None
