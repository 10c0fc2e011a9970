"""``SpellCorrector``: queries in, corrections out, over any backend.

The pipeline per query is the one training used: validate (str or UTF-8 bytes) -> normalise (the
scorer's rule: strip, collapse whitespace, lower-case) -> optional candidate annotation (when the
model was trained with it, ``spellfix.json: candidates.enabled``) -> ``<s> tokens </s>`` -> decode
-> optional copy margin: the decoder's answer replaces the query only when the model scores it at
least ``copy_margin`` nats above the query itself (``spellfix.json: decoding.copy_margin``, chosen
on a dev set by ``spellfix calibrate``), or ``real_word_margin`` nats when the answer only replaces
dictionary words (``decoding.real_word_margin``; which words count: ``decoding.known_word_zipf``,
``spellfix.lexical.lexicon``). An answer with a few word edits is judged edit by edit, so a fix
does not carry a wrong change along (``spellfix.inference.copy_rule``). A model calibrated with
``--rule acceptance`` decides with a learned rule instead (``spellfix.inference.acceptance``: word
frequencies, edit distance and the model's scores). A small model that is unsure
should leave a search query alone: a wrong "fix" of a correct query costs more than a missed fix.
Queries are sorted by length and decoded in batches of ``batch_size`` (less padding), then put back
in the caller's order. An empty query gives an empty output without running the model.

With ``backend="onnxruntime"`` or ``"tensorrt"`` nothing here imports torch or transformers, so the
class works inside a lean serving environment (Triton's python backend) from an export dir alone.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from spellfix.inference import layout
from spellfix.inference.acceptance import AcceptanceModel, answer_features
from spellfix.inference.backends import BACKENDS, Backend
from spellfix.inference.changes import apply_edits, only_real_words, word_edits
from spellfix.inference.copy_rule import Answer, CopyDecision, edit_subsets, judged_edits, partial_answers
from spellfix.inference.decoding import DecodingOptions, copy_verify, generate, score_sequences
from spellfix.lexical.context import BigramContext
from spellfix.lexical.lexicon import check_known_word_zipf, lexicon, zipf_frequencies
from spellfix.inference.tokenization import QueryTokenizer
from spellfix.inference.text import check_queries, normalize_query

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8", "fp16")
#: no length limit when encoding partial answers (those longer than the decoder may emit are not judged)
_UNBOUNDED = 1 << 30
#: at most this many candidate answers per query are scored (a query with many unknown words)
MAX_CANDIDATE_ANSWERS = 12
#: distinct normalised queries whose dictionary candidates a corrector keeps
CANDIDATE_CACHE_QUERIES = 4096
#: ``copy_margin="model"``: take the margin saved with the model (none saved: off)
FROM_MODEL = "model"


class SpellCorrector:
    """Correct search queries with a spellfix model.

    ``model``: a training output dir, checkpoint dir, export dir or hub id (torch backend); an export
    dir (``spellfix export``) for the onnxruntime and tensorrt backends.
    ``precision``: which exported graphs the onnxruntime backend loads — ``fp32`` (``onnx/``) or
    ``int8`` (``onnx-int8/``); the tensorrt backend uses the engines in ``tensorrt/``.
    ``backend_options``: passed to the backend (onnxruntime: ``providers``, ``intra_op_num_threads``,
    ``session_options``; torch: ``device``, ``dtype``; tensorrt: ``engine_dir``, ``device``).
    ``copy_margin``: ``"model"`` (default) uses the margin saved in the model's ``spellfix.json``;
    a number overrides it; ``None`` turns it off (the raw decoder output).
    ``real_word_margin``: the margin for answers that only replace dictionary words — ``"model"``
    (default: the saved one, if any), a number, or ``None`` (``copy_margin`` applies to them too);
    ignored when ``copy_margin`` is ``None``.
    ``known_word_zipf``: which words count as dictionary words for that rule — ``"model"`` (default:
    the setting saved with the margins), ``None`` (symspellpy's dictionary alone) or a Zipf frequency
    (also wordfreq's words at least that frequent; see ``spellfix.lexical.lexicon``).
    ``acceptance``: a learned rule that decides instead of the margins — ``"model"`` (default: the
    one saved by ``spellfix calibrate --rule acceptance``, if any), an
    :class:`~spellfix.inference.acceptance.AcceptanceModel`, or ``None`` (the margins decide). With
    neither rule the output is the raw decoder answer.
    ``candidate_answers``: besides the decoder's answer, judge the query with one word replaced by
    each of its first k dictionary candidates (models trained with candidates; ``"model"``: the k
    saved by ``spellfix calibrate``, 0 when none). Each is one more teacher-forced sequence.
    ``copy_verify``: greedy decoding verifies the query as a draft, a whole block per decoder call
    (``spellfix.inference.decoding.copy_verify``: the same output, a correct query in one call);
    False runs the one-token-per-call greedy loop (the reference it is tested against). Beam
    search always runs the step loop.
    """

    def __init__(
        self,
        model: str | Path,
        backend: str = "torch",
        *,
        num_beams: int = 1,
        max_new_tokens: int | None = None,
        min_new_tokens: int = 0,
        batch_size: int = 32,
        on_overlong: str = "truncate",
        precision: str = "fp32",
        backend_options: Mapping[str, Any] | None = None,
        copy_margin: float | str | None = FROM_MODEL,
        real_word_margin: float | str | None = FROM_MODEL,
        known_word_zipf: float | str | None = FROM_MODEL,
        acceptance: AcceptanceModel | str | None = FROM_MODEL,
        candidate_answers: int | str = FROM_MODEL,
        copy_verify: bool = True,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backend_name = backend
        self.batch_size = batch_size
        self.copy_verify = copy_verify and num_beams == 1
        #: decode_block calls of the last ``correct`` / ``generate_ids`` / ``copy_decisions`` call (copy-verify)
        self.last_decoder_calls = 0
        options = dict(backend_options or {})
        if backend == "torch":
            self.backend, tokenizer, self.settings, self.model_dir = _load_torch(model, options)
        else:
            export_dir = Path(model)
            if not layout.is_export_dir(export_dir):
                raise FileNotFoundError(
                    f"{model}: the {backend} backend needs an export dir (with {layout.MANIFEST_FILE}); "
                    f"create one with `spellfix export --model {model} --output EXPORT_DIR`"
                )
            self.model_dir = export_dir
            self.settings = layout.read_input_settings(export_dir)
            tokenizer_file = layout.find_file(export_dir, layout.TOKENIZER_FILE)
            if tokenizer_file is None:
                raise FileNotFoundError(f"{export_dir}: no {layout.TOKENIZER_FILE} (in it or in {layout.HF_DIR}/); re-run `spellfix export`")
            tokenizer = tokenizer_file
            self.backend = _load_exported(export_dir, backend, precision, options)
        self.tokenizer = QueryTokenizer(
            tokenizer,
            max_source_length=self.settings.max_source_length,
            bos_token_id=self.settings.bos_token_id,
            eos_token_id=self.settings.eos_token_id,
            pad_token_id=self.settings.pad_token_id,
            on_overlong=on_overlong,
        )
        self.options = DecodingOptions(
            decoder_start_token_id=self.settings.decoder_start_token_id,
            eos_token_id=self.settings.eos_token_id,
            pad_token_id=self.settings.pad_token_id,
            max_new_tokens=max_new_tokens or self.settings.max_new_tokens,
            min_new_tokens=min_new_tokens,
            num_beams=num_beams,
        )
        self.copy_margin = _margin_setting("copy_margin", copy_margin, self.settings.copy_margin)
        real_word = _margin_setting("real_word_margin", real_word_margin, self.settings.real_word_margin)
        self.real_word_margin = None if self.copy_margin is None else real_word  # margins off: both off
        self.known_word_zipf = _margin_setting("known_word_zipf", known_word_zipf, self.settings.known_word_zipf)
        if self.known_word_zipf is not None:
            check_known_word_zipf(self.known_word_zipf)
        if acceptance == FROM_MODEL:
            acceptance = AcceptanceModel.from_dict(*self.settings.acceptance) if self.settings.acceptance else None
        if acceptance is not None and not isinstance(acceptance, AcceptanceModel):
            raise ValueError(f"acceptance must be an AcceptanceModel, None or {FROM_MODEL!r}, got {acceptance!r}")
        self.acceptance: AcceptanceModel | None = acceptance
        if candidate_answers == FROM_MODEL:
            candidate_answers = self.settings.candidate_answers
        if isinstance(candidate_answers, bool) or not isinstance(candidate_answers, int) or candidate_answers < 0:
            raise ValueError(f"candidate_answers must be an integer >= 0 or {FROM_MODEL!r}, got {candidate_answers!r}")
        self.candidate_answers = candidate_answers
        self._lexicon: frozenset[str] | None = None
        self._token_kinds: tuple[np.ndarray, np.ndarray] | None = None
        self._annotator: Any = None
        if self.settings.candidates_enabled:
            from spellfix.lexical.candidates import CandidateAnnotator, CandidatesConfig  # only models trained with it

            self._annotator = CandidateAnnotator(CandidatesConfig(**self.settings.candidates))
            # a query's candidates, kept for the next time it is asked (search logs repeat queries;
            # Triton's model checks a request's encoder text before decoding it)
            self._word_candidates = functools.lru_cache(maxsize=CANDIDATE_CACHE_QUERIES)(lambda text: tuple(self._annotator.word_candidates(text)))

    def clear_caches(self) -> None:
        """Forget the dictionary candidates looked up so far (benchmarks time cold queries)."""
        if self._annotator is not None:
            self._word_candidates.cache_clear()
            self._annotator._lookup.cache_clear()

    def encoder_texts(self, queries: Sequence[str | bytes]) -> list[str]:
        """The exact encoder input text per query (normalised, annotated when the model expects it)."""
        return [self._annotate(t) for t in self._normalized(queries)]

    def _normalized(self, queries: Sequence[str | bytes]) -> list[str]:
        return [normalize_query(q) for q in check_queries(queries)]

    def _annotate(self, text: str) -> str:
        return self._annotator.annotate(text, self._word_candidates(text)) if self._annotator is not None and text else text

    def generate_ids(self, queries: Sequence[str | bytes]) -> list[list[int]]:
        """Output token ids per query (ending with eos when finished; [] for an empty query), after
        the acceptance model or the copy margins when set (the query's own ids where no answer wins)."""
        texts = self._normalized(queries)
        rule = self.acceptance is not None or self.copy_margin is not None
        decoded, copies, decisions = self._decode(texts, judge=rule)
        if not rule:
            return decoded
        outputs = []
        for ids, copy, decision in zip(decoded, copies, decisions):
            choice = self.choose(decision) if decision else None
            if choice is None or choice == decision.decoded:
                outputs.append(ids)
            elif choice == decision.query:  # whole, even when longer than the decoder may emit
                outputs.append(copy if len(copy) < self.options.max_new_tokens else self.tokenizer.encode_targets([choice], _UNBOUNDED)[0])
            else:  # a part of the decoder's edits, or a dictionary candidate answer
                outputs.append(self.tokenizer.encode_targets([choice], self.options.max_new_tokens)[0])
        return outputs

    def copy_decisions(self, queries: Sequence[str | bytes]) -> list[CopyDecision]:
        """Per query: the normalised query, the raw decoder answer, how much the model prefers it
        (``gain``), whether it is a real-word change and, for answers with a few edits, every partial
        answer. ``spellfix calibrate`` picks the margins from these on a dev set."""
        texts = self._normalized(queries)
        _, _, decisions = self._decode(texts, judge=True)
        return [d if d is not None else CopyDecision(t, t, 0.0) for t, d in zip(texts, decisions)]

    def choose(self, decision: CopyDecision) -> str:
        """This corrector's output for a judged query: the acceptance model's pick when it has one,
        else the margins' (no margin: the decoder's answer)."""
        if self.acceptance is None:
            return decision.choose(self.copy_margin, self.real_word_margin)
        model, words, frequencies = self.acceptance, self.known_words(), zipf_frequencies()
        # symspellpy's lists (a 3 s load when the model has no candidates) only for a model that reads them
        context = BigramContext.builtin() if "context_gain" in model.features else None
        return decision.choose_by(lambda answer: model.accepts(answer_features(decision.query, answer, words, frequencies, context)))

    def known_words(self) -> frozenset[str]:
        """The words that count as known for the real-word rule and the acceptance features."""
        if self._lexicon is None:
            self._lexicon = lexicon(self.known_word_zipf)
        return self._lexicon

    def _decode(self, texts: list[str], *, judge: bool) -> tuple[list[list[int]], list[list[int]], list[CopyDecision | None]]:
        """Decoded ids, the query's own target ids and (``judge``) a :class:`CopyDecision` per text
        (``judge=False``: no decisions; an empty text: None)."""
        decoded: list[list[int]] = [[] for _ in texts]
        copies: list[list[int]] = [[] for _ in texts]
        decisions: list[CopyDecision | None] = [None] * len(texts)
        self.last_decoder_calls = 0
        todo = [i for i, t in enumerate(texts) if t]
        if not todo:
            return decoded, copies, decisions
        # each query's dictionary candidates, looked up once: the encoder input and the candidate answers
        candidates = [self._word_candidates(texts[i]) if self._annotator is not None else () for i in todo]
        encoded = self.tokenizer.encode_ids(
            [self._annotator.annotate(texts[i], items) if self._annotator is not None else texts[i] for i, items in zip(todo, candidates)]
        )
        targets = self.tokenizer.encode_targets([texts[i] for i in todo], self.options.max_new_tokens)
        order = sorted(range(len(todo)), key=lambda j: len(encoded[j]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = self.tokenizer.pad([encoded[j] for j in chunk])
            drafts = [targets[j] for j in chunk]
            alternatives = [self._candidate_answers(texts[todo[j]], candidates[j]) for j in chunk] if judge else None
            state, known = None, None
            if self.copy_verify:
                state = self.backend.encode(batch.input_ids, batch.attention_mask)
                resume = [self._resume_points(d) for d in drafts]
                wanted = [bool(a) for a in alternatives] if alternatives is not None else [False] * len(chunk)
                verified = copy_verify(self.backend, state, drafts, self.options, resume, score_rows=wanted)
                outputs, known = verified.ids, (verified.scores, verified.draft_scores)
                self.last_decoder_calls += verified.decoder_calls
            else:
                outputs = generate(self.backend, batch.input_ids, batch.attention_mask, self.options)
            for j, ids in zip(chunk, outputs):
                decoded[todo[j]], copies[todo[j]] = ids, targets[j]
            if alternatives is not None:
                chunk_decisions = self._judge(batch, state, [texts[todo[j]] for j in chunk], outputs, drafts, alternatives, known)
                for j, decision in zip(chunk, chunk_decisions):
                    decisions[todo[j]] = decision
        return decoded, copies, decisions

    def _resume_points(self, draft: Sequence[int]) -> list[int]:
        """Indices of ``draft`` where a word starts (and its eos): where copy-verify re-drafts after
        the model rewrote a word."""
        starts = self._word_starts()
        return [i for i, token in enumerate(draft) if i and (token == self.options.eos_token_id or starts[0][token] or starts[1][draft[i - 1]])]

    def _word_starts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per vocabulary id: the token begins a word ("Ġword", "▁word"); the token is a lone space."""
        if self._token_kinds is None:
            vocab = self.tokenizer.tokenizer.get_vocab_size(with_added_tokens=True)
            tokens = [self.tokenizer.tokenizer.id_to_token(i) or "" for i in range(vocab)]
            begins = np.array([len(tok) > 1 and tok[0] in "Ġ▁" for tok in tokens] + [False])
            space = np.array([tok in ("Ġ", "▁", " ") for tok in tokens] + [False])
            self._token_kinds = (begins, space)
        return self._token_kinds

    def _judge(
        self,
        batch: Any,
        state: Any,
        queries: list[str],
        outputs: list[list[int]],
        copies: list[list[int]],
        alternatives: list[list[tuple[str, int, bool]]],
        known: tuple[np.ndarray, np.ndarray] | None,
    ) -> list[CopyDecision]:
        """A :class:`CopyDecision` per row. Rows whose answer differs from the query, or that have
        candidate answers, are scored in one teacher-forced ``decode_block`` pass over the encoder
        ``state`` (None: encode again): every partial answer of an answer with a few word edits
        (``spellfix.inference.copy_rule``) and the candidate answers (``alternatives``:
        ``_candidate_answers`` per row). ``known``: logP of each row's answer and of its query from
        copy-verify (NaN: not known), which then need no scoring."""
        decisions = [CopyDecision(q, q, 0.0) for q in queries]
        differ = [i for i, (out, copy) in enumerate(zip(outputs, copies)) if out != copy or alternatives[i]]
        if not differ:
            return decisions
        answers = self.tokenizer.decode([outputs[i] for i in differ])
        words = self.known_words()
        all_edits = [word_edits(queries[i], answer, words) for i, answer in zip(differ, answers)]
        edits = [judged_edits(row_edits) for row_edits in all_edits]
        sequences: list[list[int]] = []
        owners: list[int] = []
        plans = []  # per judged row: where its answer's, query's, partials' and candidates' scores are
        for k, i in enumerate(differ):
            partial_texts = [apply_edits(queries[i], edits[k], keep) for keep in edit_subsets(len(edits[k]))[:-1]]
            partial_targets = self.tokenizer.encode_targets(partial_texts, _UNBOUNDED)
            if any(len(t) > self.options.max_new_tokens for t in partial_targets):
                edits[k], partial_targets, partial_texts = [], [], []  # a partial answer the decoder could not emit: judge whole
            taken = {queries[i], answers[k], *partial_texts}
            extra = [alternative for alternative in alternatives[i] if alternative[0] not in taken]
            extra_targets = self.tokenizer.encode_targets([text for text, _, _ in extra], _UNBOUNDED)
            kept = [(alt, t) for alt, t in zip(extra, extra_targets) if len(t) <= self.options.max_new_tokens]

            def slot(sequence: list[int], score: float = math.nan) -> float | int:
                """A known score, or the index its scored sequence will have."""
                if not math.isnan(score):
                    return score
                sequences.append(sequence)
                owners.append(i)
                return len(sequences) - 1

            answer_slot = slot(outputs[i], known[0][i] if known else math.nan)
            query_slot = slot(copies[i], known[1][i] if known else math.nan)
            plans.append((answer_slot, query_slot, [slot(t) for t in partial_targets], [alt for alt, _ in kept], [slot(t) for _, t in kept]))
        if sequences:
            if state is None:
                state = self.backend.encode(batch.input_ids, batch.attention_mask)
            scored = score_sequences(self.backend, state, sequences, self.options.decoder_start_token_id, self.options.pad_token_id, np.asarray(owners))
        else:
            scored = np.zeros(0)

        def value(entry: float | int) -> float:
            return float(scored[entry]) if isinstance(entry, int) else float(entry)

        for k, (i, answer) in enumerate(zip(differ, answers)):
            answer_slot, query_slot, partial_slots, extra, extra_slots = plans[k]
            answer_score, query_score = value(answer_slot), value(query_slot)
            partial_scores = [value(s) for s in partial_slots]
            partials = partial_answers(queries[i], edits[k], [*partial_scores, answer_score], query_score) if edits[k] else ()
            real_word = only_real_words(all_edits[k])
            others = tuple(_one_word_answer(text, value(s) - query_score, rank, real) for (text, rank, real), s in zip(extra, extra_slots))
            gain = 0.0 if outputs[i] == copies[i] else answer_score - query_score
            decisions[i] = CopyDecision(queries[i], answer, gain, real_word, partials, others)
        return decisions

    def _candidate_answers(self, query: str, candidates: Sequence[Any]) -> list[tuple[str, int, bool]]:
        """The query with one word replaced by one of its first ``candidate_answers`` dictionary
        candidates (``candidates``: the query's ``word_candidates``, which the encoder input lists),
        with the candidate's rank (1 = first) and whether the replaced word is a known word."""
        if not self.candidate_answers:
            return []
        words, known = query.split(), self.known_words()
        out = []
        for item in candidates:
            for rank, candidate in enumerate(item.candidates[: self.candidate_answers], 1):
                text = " ".join([*words[: item.position], candidate, *words[item.position + 1 :]])
                out.append((text, rank, words[item.position] in known))
        return out[:MAX_CANDIDATE_ANSWERS]

    def correct(self, queries: Sequence[str | bytes]) -> list[str]:
        """One correction per query, in order. Raises TypeError/ValueError naming the bad query."""
        return self.tokenizer.decode(self.generate_ids(queries))

    def __repr__(self) -> str:
        return (
            f"SpellCorrector({str(self.model_dir)!r}, backend={self.backend_name!r}, "
            f"num_beams={self.options.num_beams}, copy_margin={self.copy_margin}, real_word_margin={self.real_word_margin}, "
            f"known_word_zipf={self.known_word_zipf}, acceptance={'saved' if self.acceptance else None})"
        )


def _one_word_answer(text: str, gain: float, rank: int, real_word: bool) -> Answer:
    """A candidate answer: one edit, so its slack is its gain, of the kind of the word it replaces."""
    return Answer(text, gain, **{"real_word_slack" if real_word else "word_slack": gain}, candidate_rank=rank)


def _margin_setting(name: str, value: float | str | None, saved: float | None) -> float | None:
    """A margin (or Zipf) argument as a float or None: ``"model"`` takes the one saved with the model."""
    if value == FROM_MODEL:
        return saved
    if value is not None and (isinstance(value, (bool, str)) or not isinstance(value, (int, float))):
        raise ValueError(f"{name} must be a number, None or {FROM_MODEL!r}, got {value!r}")
    return None if value is None else float(value)


def _load_torch(model: str | Path, options: dict[str, Any]) -> tuple[Backend, Any, layout.InputSettings, Path | str]:
    from spellfix.inference.backends.torch_backend import TorchBackend
    from spellfix.modeling import load_pretrained, resolve_model_dir

    model_dir = resolve_model_dir(model)
    hf_model, hf_tokenizer = load_pretrained(model_dir)
    if Path(model_dir).is_dir():
        settings = layout.read_input_settings(model_dir)
    else:  # hub id: no spellfix.json; token ids and output bound from the model's generation config
        gen = hf_model.generation_config
        keys = ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id", "max_new_tokens")
        settings = layout.InputSettings(**{k: getattr(gen, k) for k in keys if type(getattr(gen, k, None)) is int})
    tokenizer = hf_tokenizer.backend_tokenizer
    return TorchBackend(hf_model, **options), tokenizer, settings, model_dir


def _load_exported(export_dir: Path, backend: str, precision: str, options: dict[str, Any]) -> Backend:
    if backend == "onnxruntime":
        from spellfix.inference.backends.onnxruntime_backend import OnnxRuntimeBackend

        if precision == "fp16":
            raise ValueError("precision 'fp16' is for TensorRT (onnx-fp16/); onnxruntime runs 'fp32' or 'int8'")
        onnx_dir = export_dir / layout.ONNX_DIRS[precision]
        if not onnx_dir.is_dir():
            formats = "onnx" if precision == "fp32" else "onnx,onnx-int8"
            raise FileNotFoundError(f"{onnx_dir}: not found; export it with `spellfix export --format {formats}`")
        return OnnxRuntimeBackend(onnx_dir, **options)
    from spellfix.inference.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(export_dir / options.pop("engine_dir", layout.TENSORRT_DIR), **options)
