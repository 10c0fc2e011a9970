"""One decoding loop for every backend: greedy and beam search with a KV cache, batched.

Semantics follow ``transformers``' ``generate`` for the settings spellfix uses (no sampling, no
repetition constraints), so the runtime's outputs can be checked token for token against it:
- greedy: argmax per step; a row is finished at its first ``eos``; ``min_new_tokens`` masks ``eos``.
- beam search: HF's vectorised beam search (transformers >= 4.50): keep the top ``2 * num_beams``
  continuations, finished hypotheses scored ``sum_logprobs / generated_len ** length_penalty``, a
  batch item stops when its best running beam cannot beat its worst kept hypothesis
  (``early_stopping=False`` heuristic) or, with ``early_stopping=True``, once ``num_beams`` are done.

Rows (greedy) and batch items (beam) that are finished are dropped from the backend state once they
are a quarter of the batch, so a batch of mixed lengths does not pay for rows that are done; the loop
exits as soon as every row has finished.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spellfix.inference.backends.base import Backend, TopCandidates

#: drop finished rows from the backend state when they are at least this share of the batch
COMPACT_SHARE = 0.25
_NEG = np.float32(-1.0e9)


@dataclass(frozen=True)
class DecodingOptions:
    decoder_start_token_id: int
    eos_token_id: int
    pad_token_id: int
    max_new_tokens: int
    min_new_tokens: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must be in [0, max_new_tokens={self.max_new_tokens}], got {self.min_new_tokens}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")


def generate(backend: Backend, input_ids: np.ndarray, attention_mask: np.ndarray, options: DecodingOptions) -> list[list[int]]:
    """Generated ids per row (without the decoder start token; ending with eos when the row finished)."""
    if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
        raise ValueError(f"input_ids and attention_mask must both be (batch, length), got {input_ids.shape} and {attention_mask.shape}")
    if input_ids.shape[0] == 0:
        return []
    state = backend.encode(input_ids, attention_mask)
    if options.num_beams == 1:
        return _greedy(backend, state, input_ids.shape[0], options)
    return _beam_search(backend, state, input_ids.shape[0], options)


def _mask_eos(scores: np.ndarray, step: int, options: DecodingOptions) -> None:
    if step < options.min_new_tokens:
        scores[:, options.eos_token_id] = -np.inf


def _greedy(backend: Backend, state: object, batch: int, options: DecodingOptions) -> list[list[int]]:
    eos = options.eos_token_id
    generated = np.full((batch, options.max_new_tokens), options.pad_token_id, dtype=np.int64)
    lengths = np.zeros(batch, dtype=np.int64)
    rows = np.arange(batch)  # original row of each row in the backend state
    alive = np.ones(batch, dtype=bool)  # per state row: not yet finished
    tokens = np.full((batch, 1), options.decoder_start_token_id, dtype=np.int64)
    for step in range(options.max_new_tokens):
        suppress = options.eos_token_id if step < options.min_new_tokens else None
        logits, state = backend.decode_step(state, tokens, full_logits=False, suppress_token=suppress)
        if isinstance(logits, TopCandidates):  # suppression already applied by the backend
            next_tokens = logits.argmax()
        else:
            _mask_eos(logits, step, options)
            next_tokens = logits.argmax(axis=-1)
        live_rows = rows[alive]
        generated[live_rows, step] = next_tokens[alive]
        lengths[live_rows] = step + 1
        alive &= next_tokens != eos
        if not alive.any():
            break
        next_tokens = np.where(alive, next_tokens, options.pad_token_id)
        if (~alive).sum() >= max(1, COMPACT_SHARE * len(alive)):
            keep = np.flatnonzero(alive)
            state = backend.select_rows(state, keep)
            rows, alive, next_tokens = rows[keep], alive[keep], next_tokens[keep]
        tokens = next_tokens.reshape(-1, 1).astype(np.int64)
    return [generated[i, : lengths[i]].tolist() for i in range(batch)]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries per row, best first (ties: lower index first)."""
    part = np.argpartition(-scores, k - 1, axis=-1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=-1)
    order = np.lexsort((part, -part_scores), axis=-1)
    return np.take_along_axis(part, order, axis=-1)


class _Hypotheses:
    """The ``num_beams`` best finished hypotheses of one batch item."""

    def __init__(self, num_beams: int):
        self.num_beams = num_beams
        self.items: list[tuple[float, list[int]]] = []

    def add(self, score: float, tokens: list[int]) -> None:
        self.items.append((score, tokens))
        self.items.sort(key=lambda item: -item[0])  # stable: earlier hypotheses win ties
        del self.items[self.num_beams :]

    @property
    def full(self) -> bool:
        return len(self.items) == self.num_beams

    def worst(self) -> float:
        return self.items[-1][0] if self.full else float(_NEG)

    def best(self) -> list[int]:
        return self.items[0][1]


def _beam_search(backend: Backend, state: object, batch: int, options: DecodingOptions) -> list[list[int]]:
    nb, eos, lp = options.num_beams, options.eos_token_id, options.length_penalty
    keep_k = 2 * nb
    state = backend.select_rows(state, np.repeat(np.arange(batch), nb))
    items = np.arange(batch)  # original batch item of each item in the state
    scores = np.zeros((batch, nb), dtype=np.float32)
    scores[:, 1:] = _NEG  # only the first beam is live at step 0 (all beams are identical)
    sequences = np.zeros((batch, nb, 0), dtype=np.int64)
    hyps = [_Hypotheses(nb) for _ in range(batch)]
    done = np.zeros(batch, dtype=bool)
    tokens = np.full((batch * nb, 1), options.decoder_start_token_id, dtype=np.int64)
    for step in range(options.max_new_tokens):
        logits, state = backend.decode_step(state, tokens)
        log_probs = _log_softmax(logits.astype(np.float32, copy=False))
        _mask_eos(log_probs, step, options)
        n_items, vocab = len(items), log_probs.shape[-1]
        total = (log_probs.reshape(n_items, nb, vocab) + scores[:, :, None]).reshape(n_items, nb * vocab)
        top = _top_k(total, keep_k)
        top_scores = np.take_along_axis(total, top, axis=-1)
        parent, top_tokens = top // vocab, top % vocab
        last_step = step + 1 == options.max_new_tokens
        hits = (top_tokens == eos) | last_step
        generated_len = step + 1
        penalty = np.float32(generated_len**lp)  # float32 like transformers, so ties break alike
        for i in range(n_items):
            hyp = hyps[items[i]]
            if options.early_stopping and hyp.full:
                continue
            for rank in range(nb):  # only the top num_beams candidates may finish a hypothesis
                if hits[i, rank]:
                    seq = [*sequences[i, parent[i, rank]].tolist(), int(top_tokens[i, rank])]
                    hyp.add(float(top_scores[i, rank] / penalty), seq)
        if last_step:
            break
        running = _top_k(np.where(hits, top_scores + _NEG, top_scores), nb)
        beam_parent = np.take_along_axis(parent, running, axis=-1)
        scores = np.take_along_axis(top_scores, running, axis=-1).astype(np.float32)
        beam_tokens = np.take_along_axis(top_tokens, running, axis=-1)
        sequences = np.concatenate(
            [np.take_along_axis(sequences, beam_parent[:, :, None], axis=1), beam_tokens[:, :, None]], axis=2
        )
        # Can a running beam still beat the worst kept hypothesis? (HF's early_stopping=False rule)
        best_possible = scores[:, 0] / penalty
        for i in range(n_items):
            hyp = hyps[items[i]]
            if hyp.full and (options.early_stopping or best_possible[i] <= hyp.worst()):
                done[items[i]] = True
        flat_parent = (np.arange(n_items)[:, None] * nb + beam_parent).reshape(-1)
        live = ~done[items]
        if not live.any():
            break
        if not live.all():
            flat_parent = flat_parent.reshape(n_items, nb)[live].reshape(-1)
            items, scores, sequences, beam_tokens = items[live], scores[live], sequences[live], beam_tokens[live]
        state = backend.select_rows(state, flat_parent)
        tokens = beam_tokens.reshape(-1, 1).astype(np.int64)
    return [hyps[b].best() for b in range(batch)]


def score_sequences(backend: Backend, state: object, sequences: list[list[int]], decoder_start_token_id: int, pad_token_id: int) -> np.ndarray:
    """Sum of log-probabilities of each row's ``sequences[i]`` (ids ending with eos) given row i of
    the encoder ``state``, by teacher forcing through the same ``decode_step`` the loop uses.

    Why: comparing the decoder's answer with "leave the query alone" on one scale (the copy margin)
    needs both scored by the model, and every backend can run this without extra graphs.
    """
    if len(sequences) == 0:
        return np.zeros(0, dtype=np.float64)
    lengths = np.array([len(s) for s in sequences])
    if (lengths < 1).any():
        raise ValueError("every sequence to score needs at least one token (its eos)")
    targets = np.full((len(sequences), int(lengths.max())), pad_token_id, dtype=np.int64)
    for row, seq in enumerate(sequences):
        targets[row, : len(seq)] = seq
    totals = np.zeros(len(sequences), dtype=np.float64)
    tokens = np.full((len(sequences), 1), decoder_start_token_id, dtype=np.int64)
    for step in range(targets.shape[1]):
        logits, state = backend.decode_step(state, tokens, full_logits=True)
        log_probs = _log_softmax(np.asarray(logits, dtype=np.float32))
        live = lengths > step
        totals[live] += log_probs[live, targets[live, step]]
        tokens = targets[:, step : step + 1]
    return totals
