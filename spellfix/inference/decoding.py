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
from typing import Sequence

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


def score_sequences(
    backend: Backend, state: object, sequences: Sequence[Sequence[int]], decoder_start_token_id: int, pad_token_id: int, rows: np.ndarray | None = None
) -> np.ndarray:
    """Sum of log-probabilities of each ``sequences[i]`` (ids ending with eos) given encoder row
    ``rows[i]`` of ``state`` (an encoder state; ``None``: row i), teacher-forced in one
    ``decode_block`` call: the whole batch of answers at once, reusing the encoder output.

    Why: comparing the decoder's answer, its parts and dictionary candidate answers with "leave the
    query alone" on one scale (the copy rule, the acceptance model) needs them scored by the model.
    """
    if len(sequences) == 0:
        return np.zeros(0, dtype=np.float64)
    lengths = np.array([len(s) for s in sequences])
    if (lengths < 1).any():
        raise ValueError("every sequence to score needs at least one token (its eos)")
    targets = np.full((len(sequences), int(lengths.max())), pad_token_id, dtype=np.int64)
    for row, seq in enumerate(sequences):
        targets[row, : len(seq)] = seq
    inputs = np.concatenate([np.full((len(sequences), 1), decoder_start_token_id, dtype=np.int64), targets[:, :-1]], axis=1)
    logits = np.asarray(backend.decode_block(state, inputs, rows), dtype=np.float32)
    picked = np.take_along_axis(logits, targets[:, :, None], axis=-1)[:, :, 0] - _log_sum_exp(logits)
    live = np.arange(targets.shape[1])[None, :] < lengths[:, None]
    return np.where(live, picked, 0.0).sum(axis=1, dtype=np.float64)


def _log_sum_exp(logits: np.ndarray) -> np.ndarray:
    """log sum exp over the last axis (the log-softmax normaliser), without the (..., V) log-probs."""
    peak = logits.max(axis=-1)
    return peak + np.log(np.exp(logits - peak[..., None]).sum(axis=-1))


@dataclass
class VerifiedOutput:
    """What copy-verify decoding found, per row.

    ``ids``: the greedy output (ending with eos when finished), token for token what ``generate``'s
    greedy loop gives. ``scores``: logP of ``ids`` under the model (the answer's own score, free from
    the verify passes; NaN for a row outside ``score_rows`` that kept its draft). ``draft_scores``: logP
    of the row's draft as given (the query kept), from the first pass; NaN where that pass did not
    see the whole draft (a draft cut to ``max_new_tokens``) or was not asked to score it.
    ``decoder_calls``: ``decode_block`` calls the batch took.
    """

    ids: list[list[int]]
    scores: np.ndarray
    draft_scores: np.ndarray
    decoder_calls: int


def copy_verify(
    backend: Backend,
    state: object,
    drafts: Sequence[Sequence[int]],
    options: DecodingOptions,
    resume_points: Sequence[Sequence[int]] | None = None,
    score_rows: Sequence[bool] | None = None,
) -> VerifiedOutput:
    """Greedy decoding that verifies a draft per row instead of generating one token per call
    (input-guided aggressive decoding): a spell corrector's output is mostly its input.

    Each call feeds ``<start> + accepted + draft`` for every unfinished row as one block
    (``Backend.decode_block``); a row keeps the longest draft prefix on which the argmax agrees,
    plus the model's own next token there. Every kept token is the argmax given exactly the tokens
    before it, so the output is greedy decoding's. After a divergence the row re-drafts from the
    rest of its draft: right after the next occurrence of the model's token in it, else at the
    next of its ``resume_points`` (indices into the draft where a word starts), else one token on.
    A correct query costs one call. ``drafts``: the query's target ids (ending with eos).
    ``score_rows``: rows whose scores are wanted even when they keep their draft whole (default
    all; the others skip the log-softmax then, and their ``scores`` read NaN).
    """
    if options.num_beams != 1:
        raise ValueError("copy_verify is greedy decoding (num_beams=1)")
    batch = len(drafts)
    eos, limit = options.eos_token_id, options.max_new_tokens
    accepted: list[list[int]] = [[] for _ in range(batch)]
    scores = np.zeros(batch, dtype=np.float64)
    draft_scores = np.full(batch, np.nan, dtype=np.float64)
    pointers = [0] * batch  # where in its draft each row's current draft starts
    matched = [-1] * batch  # index in its draft of the last draft token the row kept
    active = list(range(batch))
    calls = 0
    while active:
        feeds = []
        for r in active:
            feed = [*accepted[r], *drafts[r][pointers[r] :]]
            if feed and feed[-1] == eos:
                feed.pop()  # nothing to predict after eos
            feeds.append(feed[: limit - 1])
        width = 1 + max(len(f) for f in feeds)
        inputs = np.full((len(active), width), options.pad_token_id, dtype=np.int64)
        inputs[:, 0] = options.decoder_start_token_id
        for i, feed in enumerate(feeds):
            inputs[i, 1 : 1 + len(feed)] = feed
        logits = np.asarray(backend.decode_block(state, inputs, np.asarray(active)), dtype=np.float32)
        calls += 1
        if options.min_new_tokens:
            logits[:, : options.min_new_tokens, eos] = -np.inf
        best = logits.argmax(axis=-1)
        still = []
        for i, r in enumerate(active):
            draft = drafts[r]
            start = position = len(accepted[r])
            k, done = pointers[r], False
            while position <= len(feeds[i]):
                token = int(best[i, position])
                accepted[r].append(token)
                position += 1
                if token == eos or len(accepted[r]) >= limit:
                    done = True
                    break
                if k < len(draft) and token == draft[k]:
                    matched[r], k = k, k + 1
                    continue
                break
            if calls == 1 and done and not (score_rows is None or score_rows[r]) and accepted[r] == list(draft):
                scores[r] = np.nan  # kept its draft whole, and nobody asked: no log-softmax needed
                continue
            # log-softmax normaliser of this row only, over the positions scored
            scored_to = max(position, len(draft) if calls == 1 else 0)
            normaliser = _log_sum_exp(logits[i, :scored_to])
            if calls == 1 and len(draft) <= len(feeds[i]) + 1:
                positions = np.arange(len(draft))
                draft_scores[r] = float((logits[i, positions, draft] - normaliser[positions]).sum())
            positions = np.arange(start, position)
            scores[r] += float((logits[i, positions, accepted[r][start:position]] - normaliser[positions]).sum())
            if done:
                continue
            pointers[r] = _redraft(draft, accepted[r][-1], matched[r], k, resume_points[r] if resume_points else ())
            if pointers[r] - 1 > matched[r] and pointers[r] <= len(draft) and draft[pointers[r] - 1] == accepted[r][-1]:
                matched[r] = pointers[r] - 1
            still.append(r)
        active = still
    return VerifiedOutput(accepted, scores, draft_scores, calls)


def _redraft(draft: Sequence[int], token: int, matched: int, diverged: int, resume_points: Sequence[int]) -> int:
    """Where the next draft starts after the model emitted ``token`` where the draft had
    ``draft[diverged]`` (``matched``: the last draft index kept). Speed only: any answer is exact."""
    for index in range(matched + 1, len(draft)):
        if draft[index] == token:
            return index + 1  # the model caught up with the draft (a deletion or a same-token fix)
    for point in resume_points:
        if point > diverged:
            return point  # skip the rest of the word being fixed
    return min(diverged + 1, len(draft))
