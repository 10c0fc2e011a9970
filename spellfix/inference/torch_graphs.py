"""The three inference graphs of a BART-family model as small torch modules with plain tensor I/O.

These modules are what ``spellfix export`` hands to ``torch.onnx.export`` and what the torch backend
runs eagerly, so every backend decodes through the same arithmetic. They reuse the Hugging Face
model's own parameters and submodules (embeddings, LayerNorms, Linear layers, activation) and spell
out only the attention, with the key/value cache as explicit tensors instead of transformers' Cache
objects — explicit tensors are what ONNX and TensorRT need, and they let the decoder receive the
cross-attention keys/values computed once from the encoder output instead of every step.

Graphs (names follow the export layout in DESIGN.md):
- ``EncoderGraph``: input_ids, attention_mask -> encoder_hidden_states
- ``DecoderGraph`` (first step, no past): input_ids (B, T), encoder_hidden_states,
  encoder_attention_mask -> logits (B, T, V), per layer present self K/V (B, H, T, Dh) and the
  cross-attention K/V (B, H, S, Dh)
- ``DecoderWithPastGraph``: one new token per row, encoder_attention_mask, past self K/V, cross
  K/V -> logits (B, 1, V) and present self K/V (B, H, P+1, Dh)
- ``KvReorderGraph``: row_index (N,), self + cross K/V -> the same with rows picked (beam search,
  dropping finished rows) — a graph so that it runs where the cache lives

Both ``bart`` (post-LayerNorm, facebook/bart-base) and ``mbart`` (pre-LayerNorm with final encoder/
decoder LayerNorms, the from-scratch models) are supported; every flag is read from the model.
"""

from __future__ import annotations

import torch
from torch import nn

SUPPORTED_MODEL_TYPES = ("bart", "mbart")
#: Position ids of BART's learned positional embedding start at this offset (a fairseq legacy).
POSITION_OFFSET = 2


def _check_supported(model: nn.Module) -> None:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"model type {model_type!r} is not supported by spellfix export/inference; expected one of {SUPPORTED_MODEL_TYPES}"
        )
    if not getattr(model.config, "is_encoder_decoder", False):
        raise ValueError("spellfix export/inference needs an encoder-decoder model")


def _is_pre_layer_norm(model: nn.Module) -> bool:
    """MBart normalises before each block (pre-LN); BART after (post-LN)."""
    return model.config.model_type == "mbart"


def _padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, S) 1/0 mask -> (B, 1, 1, S) additive bias: 0 where attended, a large negative where padded."""
    keep = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    batch, length, dim = x.shape
    return x.view(batch, length, num_heads, dim // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None, scaling: float) -> torch.Tensor:
    # Same order of operations as transformers' eager attention (matmul, then scale, then bias).
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if bias is not None:
        scores = scores + bias
    return torch.matmul(torch.softmax(scores, dim=-1), value)


class _FusedProjection(nn.Module):
    """Several Linear layers over the same input as one matmul (q/k/v, or cross k/v): one weight
    read and one kernel launch instead of three — what a batch-1 decoding step is made of."""

    def __init__(self, *linears: nn.Linear):
        super().__init__()
        self.sizes = [lin.out_features for lin in linears]
        weight = torch.cat([lin.weight.detach() for lin in linears], dim=0)
        bias = torch.cat([lin.bias.detach() if lin.bias is not None else torch.zeros(lin.out_features) for lin in linears])
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias.to(weight.dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(nn.functional.linear(x, self.weight, self.bias), self.sizes, dim=-1)


class _Block(nn.Module):
    """Residual wrapper: ``x + f(LN(x))`` for pre-LN, ``LN(x + f(x))`` for post-LN."""

    def __init__(self, layer_norm: nn.LayerNorm, pre_layer_norm: bool):
        super().__init__()
        self.layer_norm = layer_norm
        self.pre_layer_norm = pre_layer_norm

    def enter(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(hidden) if self.pre_layer_norm else hidden

    def leave(self, residual: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        hidden = residual + out
        return hidden if self.pre_layer_norm else self.layer_norm(hidden)


def _feed_forward(layer: nn.Module, block: _Block, hidden: torch.Tensor) -> torch.Tensor:
    x = block.enter(hidden)
    return block.leave(hidden, layer.fc2(layer.activation_fn(layer.fc1(x))))


class EncoderGraph(nn.Module):
    """input_ids (B, S) int64, attention_mask (B, S) int64 -> encoder_hidden_states (B, S, D)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        _check_supported(model)
        self.encoder = model.get_encoder()
        pre = _is_pre_layer_norm(model)
        self.attn_blocks = nn.ModuleList(_Block(layer.self_attn_layer_norm, pre) for layer in self.encoder.layers)
        self.ffn_blocks = nn.ModuleList(_Block(layer.final_layer_norm, pre) for layer in self.encoder.layers)
        self.qkv = nn.ModuleList(
            _FusedProjection(l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj) for l in self.encoder.layers
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device) + POSITION_OFFSET
        hidden = enc.embed_tokens(input_ids) + nn.functional.embedding(positions, enc.embed_positions.weight)
        hidden = enc.layernorm_embedding(hidden)
        bias = _padding_bias(attention_mask, hidden.dtype)
        for layer, attn_block, ffn_block, qkv in zip(enc.layers, self.attn_blocks, self.ffn_blocks, self.qkv):
            attn = layer.self_attn
            x = attn_block.enter(hidden)
            q, k, v = (_split_heads(t, attn.num_heads) for t in qkv(x))
            hidden = attn_block.leave(hidden, attn.out_proj(_merge_heads(_attend(q, k, v, bias, attn.scaling))))
            hidden = _feed_forward(layer, ffn_block, hidden)
        final_norm = getattr(enc, "layer_norm", None)
        return final_norm(hidden) if final_norm is not None else hidden


class _DecoderCore(nn.Module):
    """Shared decoder arithmetic; the two graph classes differ only in their tensor signatures."""

    def __init__(self, model: nn.Module):
        super().__init__()
        _check_supported(model)
        self.decoder = model.get_decoder()
        self.lm_head = model.lm_head
        self.register_buffer("final_logits_bias", model.final_logits_bias.detach().clone(), persistent=False)
        pre = _is_pre_layer_norm(model)
        layers = self.decoder.layers
        self.self_blocks = nn.ModuleList(_Block(layer.self_attn_layer_norm, pre) for layer in layers)
        self.cross_blocks = nn.ModuleList(_Block(layer.encoder_attn_layer_norm, pre) for layer in layers)
        self.ffn_blocks = nn.ModuleList(_Block(layer.final_layer_norm, pre) for layer in layers)
        self.self_qkv = nn.ModuleList(_FusedProjection(l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj) for l in layers)
        self.cross_kv = nn.ModuleList(_FusedProjection(l.encoder_attn.k_proj, l.encoder_attn.v_proj) for l in layers)
        self.num_layers = len(layers)

    def cross_key_values(self, encoder_hidden_states: torch.Tensor) -> list[torch.Tensor]:
        """[k0, v0, k1, v1, ...] of the cross-attention, each (B, H, S, Dh): computed once per query."""
        out: list[torch.Tensor] = []
        for layer, kv in zip(self.decoder.layers, self.cross_kv):
            out.extend(_split_heads(t, layer.encoder_attn.num_heads) for t in kv(encoder_hidden_states))
        return out

    def run(
        self,
        input_ids: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
        past_self: list[torch.Tensor] | None,
        cross: list[torch.Tensor],
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        dec = self.decoder
        new_tokens = input_ids.shape[1]
        past_length = past_self[0].shape[2] if past_self is not None else 0
        positions = torch.arange(new_tokens, device=input_ids.device) + (past_length + POSITION_OFFSET)
        hidden = dec.embed_tokens(input_ids) + nn.functional.embedding(positions, dec.embed_positions.weight)
        hidden = dec.layernorm_embedding(hidden)
        cross_bias = _padding_bias(encoder_attention_mask, hidden.dtype)
        causal_bias = None
        if new_tokens > 1:  # a step with one new token may attend to everything before it
            total = past_length + new_tokens
            rows = torch.arange(new_tokens, device=input_ids.device)[:, None] + past_length
            cols = torch.arange(total, device=input_ids.device)[None, :]
            causal_bias = torch.where(cols > rows, torch.finfo(hidden.dtype).min, 0.0).to(hidden.dtype)
        present: list[torch.Tensor] = []
        for i, layer in enumerate(dec.layers):
            attn = layer.self_attn
            x = self.self_blocks[i].enter(hidden)
            q, k, v = (_split_heads(t, attn.num_heads) for t in self.self_qkv[i](x))
            if past_self is not None:
                k = torch.cat([past_self[2 * i], k], dim=2)
                v = torch.cat([past_self[2 * i + 1], v], dim=2)
            present += [k, v]
            out = attn.out_proj(_merge_heads(_attend(q, k, v, causal_bias, attn.scaling)))
            hidden = self.self_blocks[i].leave(hidden, out)

            xattn = layer.encoder_attn
            x = self.cross_blocks[i].enter(hidden)
            q = _split_heads(xattn.q_proj(x), xattn.num_heads)
            out = xattn.out_proj(_merge_heads(_attend(q, cross[2 * i], cross[2 * i + 1], cross_bias, xattn.scaling)))
            hidden = self.cross_blocks[i].leave(hidden, out)
            hidden = _feed_forward(layer, self.ffn_blocks[i], hidden)
        final_norm = getattr(dec, "layer_norm", None)
        if final_norm is not None:
            hidden = final_norm(hidden)
        logits = self.lm_head(hidden) + self.final_logits_bias
        return logits, present


class DecoderGraph(nn.Module):
    """First decoding step (no past): also returns the cross-attention K/V for the following steps."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.core = _DecoderCore(model)

    def forward(
        self, input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        cross = self.core.cross_key_values(encoder_hidden_states)
        logits, present = self.core.run(input_ids, encoder_attention_mask, None, cross)
        return (logits, *present, *cross)


class DecoderWithPastGraph(nn.Module):
    """Later steps: one new token per row, past self K/V and the cross K/V from the first step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.core = _DecoderCore(model)

    def forward(self, input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor, *key_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = 2 * self.core.num_layers
        past_self, cross = list(key_values[:n]), list(key_values[n:])
        logits, present = self.core.run(input_ids, encoder_attention_mask, past_self, cross)
        return (logits, *present)


class KvReorderGraph(nn.Module):
    """row_index (N,), self K/V and cross K/V -> the same tensors with rows ``row_index`` (N rows).

    Beam search follows its surviving beams and the loop drops finished rows with this gather; as a
    graph it runs on the device of the other graphs (ORT CUDA provider, TensorRT) without a host trip.
    """

    def forward(self, row_index: torch.Tensor, *key_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(kv.index_select(0, row_index) for kv in key_values)


def io_names(num_layers: int) -> dict[str, list[str]]:
    """Input/output names of the three graphs, shared by export, runtime backends and the manifest."""
    self_past = [f"past_key_values.{i}.decoder.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    cross_past = [f"past_key_values.{i}.encoder.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    self_present = [f"present.{i}.decoder.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    cross_present = [f"present.{i}.encoder.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    return {
        "encoder_inputs": ["input_ids", "attention_mask"],
        "encoder_outputs": ["encoder_hidden_states"],
        "decoder_inputs": ["input_ids", "encoder_hidden_states", "encoder_attention_mask"],
        "decoder_outputs": ["logits", *self_present, *cross_present],
        "decoder_with_past_inputs": ["input_ids", "encoder_attention_mask", *self_past, *cross_past],
        "decoder_with_past_outputs": ["logits", *self_present],
        "kv_reorder_inputs": ["row_index", *self_past, *cross_past],
        "kv_reorder_outputs": [n.replace("past_key_values.", "reordered.") for n in (*self_past, *cross_past)],
    }


def head_dim(model: nn.Module) -> int:
    return model.config.d_model // model.config.decoder_attention_heads

