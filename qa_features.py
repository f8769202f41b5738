"""Question + context → token windows → padded batches: what training, evaluation, predict.py and
the exported model's Hugging Face pipeline share. Needs only NumPy, torch and a fast tokenizer, so
an exported model directory carries this file (qa_pipeline.save) without the rest of the project."""

import contextlib
import dataclasses
import gc
import itertools
import json
import math
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch


@dataclasses.dataclass
class Examples:
    """Parallel lists, one entry per question. Contexts are shared between the questions of a
    paragraph (`context_index`). `answer_start` / `answer_text` is the first gold answer (training
    label), empty text when unanswerable."""

    ids: List[str]
    questions: List[str]
    contexts: List[str]
    context_index: List[int]
    answer_start: List[int]
    answer_text: List[str]
    is_impossible: List[bool]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.ids)


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    token_type_ids: bool = True


def _cut_question(question: str, offsets, max_query_length: int) -> str:
    return (
        question[: offsets[max_query_length - 1][1]]
        if len(offsets) > max_query_length
        else question
    )


def truncate_questions(questions: List[str], tokenizer, max_query_length: int) -> List[str]:
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    return [
        _cut_question(q, offsets, max_query_length)
        for q, offsets in zip(questions, enc["offset_mapping"])
    ]


def _context_mask(special: np.ndarray) -> np.ndarray:
    """Context tokens of [CLS] question [SEP] (+[SEP]) context [SEP] [PAD]...: the ordinary tokens
    after the first special token that follows an ordinary one. Works for every family's template."""
    ordinary = ~special
    boundary = np.zeros_like(special)
    boundary[:, 1:] = special[:, 1:] & ordinary[:, :-1]
    return ordinary & (np.cumsum(boundary, axis=1) == 1)


# Every code point Python counts as whitespace (the highest is U+3000).
_WHITESPACE = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)


def _tidy_context_tokens(
    offsets: np.ndarray, is_context: np.ndarray, contexts: List[str], context_of_row: np.ndarray
) -> None:
    """SentencePiece tokenizers differ in how they report the word-start piece '▁': some fast
    tokenizers (transformers 4's ALBERT conversion) start a word's offsets at the space before it,
    others give a bare '▁' the offsets of the character after it, the same as that character's own
    piece (or a part of it). So, in place: token starts move past whitespace, and a context token
    whose span is then empty, or starts where the next token's starts and lies within it, stops
    counting as context: it can be no answer boundary (an answer ending on "x" would otherwise be
    labelled with its end before its start)."""
    codes = [np.frombuffer(c.encode("utf-32-le"), dtype=np.uint32) for c in contexts]
    base = np.cumsum([0] + [len(c) for c in codes])[context_of_row][:, None]
    space = np.isin(np.concatenate(codes + [np.zeros(1, np.uint32)]), _WHITESPACE)
    starts, ends = offsets[:, :, 0], offsets[:, :, 1]
    while True:
        move = is_context & (starts < ends)
        move[move] = space[(base + starts)[move]]
        if not move.any():
            break
        starts[move] += 1
    is_context &= starts < ends
    inside_next = (
        (starts[:, :-1] == starts[:, 1:]) & (ends[:, :-1] <= ends[:, 1:]) & is_context[:, 1:]
    )
    is_context[:, :-1] &= ~inside_next


# Windows before labelling: token ids, special-token flags, offsets, token types (or None), lengths,
# and the question (counted from the batch's first) that each row belongs to.
Windows = Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray], np.ndarray, np.ndarray]
# verbose=False: a context alone may be longer than the model takes; only its windows go to the model.
_ALONE = dict(
    add_special_tokens=False,
    return_offsets_mapping=True,
    return_special_tokens_mask=True,
    verbose=False,
)
_KEYS = ("input_ids", "special_tokens_mask", "offset_mapping")


@dataclasses.dataclass(frozen=True)
class PairTemplate:
    """How the tokenizer lays out a (question, context) pair: `runs` special tokens before the
    question, between it and the context, and after the context; those tokens' ids, special flags,
    offsets and token types, in order; the token type of question and of context tokens."""

    runs: Tuple[int, int, int]
    ids: Tuple[int, ...]
    special: Tuple[int, ...]
    offsets: Tuple[Tuple[int, int], ...]
    types: Tuple[int, ...]
    question_type: int
    context_type: int


def _trims_window_starts(tokenizer) -> bool:
    """Byte-level post-processors that trim offsets with add_prefix_space leave the first token of
    every window untrimmed (each overflowing window counts its tokens from 0 again); a slice of the
    context's tokens cannot know where windows start."""
    processor = tokenizer.backend_tokenizer.post_processor

    def trims(node) -> bool:
        if isinstance(node, dict):
            return bool(node.get("trim_offsets") and node.get("add_prefix_space")) or any(
                map(trims, node.values())
            )
        return isinstance(node, list) and any(map(trims, node))

    return processor is not None and trims(json.loads(processor.__getstate__()))


def pair_template(tokenizer) -> Optional[PairTemplate]:
    """The pair layout read off the tokenizer's own encodings of two small pairs; None when they do
    not show one run of question tokens, then one of context tokens, each exactly the text's tokens
    alone, among special tokens that are the same for both pairs."""
    if getattr(tokenizer, "truncation_side", "right") != "right" or _trims_window_starts(tokenizer):
        return None

    def tokens(enc, k, positions):  # (id, special flag, offsets, type id) of each token
        return [
            (
                enc["input_ids"][k][i],
                enc["special_tokens_mask"][k][i],
                tuple(enc["offset_mapping"][k][i]),
                enc["token_type_ids"][k][i],
            )
            for i in positions
        ]

    found = set()
    for question, context in (("a", "b"), ("b a, b", "a b. a")):
        pair = tokenizer(
            [question],
            [context],
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_token_type_ids=True,
        )
        alone = tokenizer([question, context], **_ALONE, return_token_type_ids=True)
        seq = pair.sequence_ids(0)
        q_pos, c_pos = ([i for i, s in enumerate(seq) if s == k] for k in (0, 1))
        if (
            not q_pos
            or not c_pos
            or q_pos != list(range(q_pos[0], q_pos[-1] + 1))
            or c_pos != list(range(c_pos[0], c_pos[-1] + 1))
            or q_pos[-1] > c_pos[0]
        ):
            return None
        q, c = tokens(pair, 0, q_pos), tokens(pair, 0, c_pos)
        q_types, c_types = {t[3] for t in q}, {t[3] for t in c}
        # A text alone has type 0; otherwise the pair's sequence tokens must be each text's own.
        if (
            len(q_types) > 1
            or len(c_types) > 1
            or [[t[:3] for t in x] for x in (q, c)]
            != [
                [t[:3] for t in tokens(alone, k, range(len(ids)))]
                for k, ids in enumerate(alone["input_ids"])
            ]
        ):
            return None
        specials = tokens(pair, 0, [i for i, s in enumerate(seq) if s is None])
        found.add(
            PairTemplate(
                (q_pos[0], c_pos[0] - q_pos[-1] - 1, len(seq) - c_pos[-1] - 1),
                *(tuple(column) for column in zip(*specials)) if specials else ((),) * 4,
                q_types.pop(),
                c_types.pop(),
            )
        )
    template = found.pop()
    return (
        template
        if not found and sum(template.runs) == tokenizer.num_special_tokens_to_add(pair=True)
        else None
    )


def _flat(enc) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lengths, ids, special flags, offsets) of a batch of texts' tokens, the texts end to end."""
    lengths = np.fromiter(map(len, enc["input_ids"]), dtype=np.int64, count=len(enc["input_ids"]))
    n = int(lengths.sum())
    chain = itertools.chain.from_iterable
    ids = np.fromiter(chain(enc["input_ids"]), dtype=np.int64, count=n)
    special = np.fromiter(chain(enc["special_tokens_mask"]), dtype=bool, count=n)
    offsets = np.fromiter(chain(chain(enc["offset_mapping"])), dtype=np.int32, count=2 * n).reshape(
        n, 2
    )
    return lengths, ids, special, offsets


def _context_tokens(
    contexts: List[str], tokenizer, cache
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """_flat of the contexts' tokens, those in `cache` (context → (ids, special flags, offsets)) taken
    from it and the others added to it."""
    if cache is None:
        return _flat(tokenizer(contexts, **_ALONE))
    found = {c: cache.get(c) for c in contexts}
    missing = [c for c, tokens in found.items() if tokens is None]
    if missing:
        lengths, ids, special, offsets = _flat(tokenizer(missing, **_ALONE))
        for c, end, n in zip(missing, np.cumsum(lengths), lengths):
            found[c] = cache[c] = (
                ids[end - n : end].copy(),
                special[end - n : end].copy(),
                offsets[end - n : end].copy(),
            )
    parts = [found[c] for c in contexts]
    return (np.array([len(p[0]) for p in parts], dtype=np.int64),) + tuple(
        np.concatenate(x) for x in zip(*parts)
    )


def _shared_windows(
    examples: Examples,
    lo: int,
    hi: int,
    tokenizer,
    spec: FeatureSpec,
    template: PairTemplate,
    cache,
) -> Optional[Windows]:
    """The windows of _pair_windows, from each distinct context's tokens (and each question's) alone:
    the pair tokenizer keeps `room` = max_seq_length - special tokens - question tokens of the
    context per window, the next window starting room - doc_stride tokens later, until one reaches
    the context's end. None where it would raise instead (no room beyond the stride)."""
    L, n = spec.max_seq_length, hi - lo
    questions = examples.questions[lo:hi]
    enc = tokenizer(questions, **_ALONE)
    parts = {key: list(enc[key]) for key in _KEYS}
    long = [i for i, ids in enumerate(parts["input_ids"]) if len(ids) > spec.max_query_length]
    if (
        long
    ):  # cut as truncate_questions cuts them, then tokenized again as the pair tokenizer gets them
        cut = tokenizer(
            [
                _cut_question(questions[i], parts["offset_mapping"][i], spec.max_query_length)
                for i in long
            ],
            **_ALONE,
        )
        for key in _KEYS:
            for j, i in enumerate(long):
                parts[key][i] = cut[key][j]
    q_len, q_ids, q_special, q_offsets = _flat(parts)
    distinct, which = np.unique(np.asarray(examples.context_index[lo:hi]), return_inverse=True)
    c_len, c_ids, c_special, c_offsets = _context_tokens(
        [examples.contexts[c] for c in distinct], tokenizer, cache
    )

    context_len = c_len[which]
    room = L - sum(template.runs) - q_len
    step = room - spec.doc_stride
    overflows = context_len > room
    if (overflows & (step <= 0)).any():
        return None
    count = np.where(overflows, -(-(context_len - room) // np.maximum(step, 1)) + 1, 1)
    question = np.repeat(np.arange(n), count)
    window = np.arange(len(question)) - np.repeat(np.cumsum(count) - count, count)
    begin = window * step[question]
    width = np.minimum(begin + room[question], context_len[question]) - begin

    # Every row is six runs of a token table (special tokens, question tokens, context tokens, padding),
    # gathered with one index array: a run that starts at flat position p and table row t fills
    # positions p + k with table rows t + k.
    a, b, c = template.runs
    m, q_base = len(question), len(template.ids)
    c_base = q_base + len(q_ids)
    pad_base = c_base + len(c_ids)
    c_first = (np.cumsum(c_len) - c_len)[which]
    lengths = sum(template.runs) + q_len[question] + width
    runs = np.stack(
        [np.full(m, a), q_len[question], np.full(m, b), width, np.full(m, c), L - lengths], axis=1
    )
    table_rows = np.stack(
        [
            np.zeros(m, np.int64),
            q_base + (np.cumsum(q_len) - q_len)[question],
            np.full(m, a),
            c_base + c_first[question] + begin,
            np.full(m, a + b),
            np.full(m, pad_base),
        ],
        axis=1,
    )
    starts = np.arange(m)[:, None] * L + np.cumsum(runs, axis=1) - runs
    src = (np.repeat((table_rows - starts).ravel(), runs.ravel()) + np.arange(m * L)).reshape(m, L)

    def gather(specials, questions, contexts, padding, dtype):
        return np.concatenate(
            [
                np.asarray(specials, dtype=dtype).reshape(-1, *padding.shape[1:]),
                questions,
                contexts,
                padding,
            ]
        ).astype(dtype)[src]

    id_dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.int32
    ids = gather(template.ids, q_ids, c_ids, np.full(L, tokenizer.pad_token_id), id_dtype)
    special = gather(template.special, q_special, c_special, np.ones(L, bool), bool)
    offsets = gather(template.offsets, q_offsets, c_offsets, np.zeros((L, 2), np.int32), np.int32)
    types = None
    if spec.token_type_ids:
        types = gather(
            template.types,
            np.full(len(q_ids), template.question_type),
            np.full(len(c_ids), template.context_type),
            np.zeros(L, np.uint8),
            np.uint8,
        )
    return ids, special, offsets, types, lengths.astype(np.int16), question


def _pair_windows(examples: Examples, lo: int, hi: int, tokenizer, spec: FeatureSpec) -> Windows:
    """The windows as the fast tokenizer cuts (question, context) pairs, every context tokenized
    again for each of its questions."""
    L = spec.max_seq_length
    questions = truncate_questions(examples.questions[lo:hi], tokenizer, spec.max_query_length)
    contexts = [examples.contexts[i] for i in examples.context_index[lo:hi]]
    enc = tokenizer(
        questions,
        contexts,
        truncation="only_second",
        max_length=L,
        stride=spec.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_token_type_ids=spec.token_type_ids,
    )
    # Unpadded lists copied row by row into preallocated arrays: converting full-width padded lists
    # (or return_tensors="np", which flattens nested lists in Python) is several times slower.
    m = len(enc["input_ids"])
    id_dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.int32
    ids = np.full((m, L), tokenizer.pad_token_id, dtype=id_dtype)
    special = np.ones((m, L), dtype=bool)
    offsets = np.zeros((m, L, 2), dtype=np.int32)
    types = np.zeros((m, L), dtype=np.uint8) if spec.token_type_ids else None
    lengths = np.empty(m, dtype=np.int16)
    for i, row in enumerate(enc["input_ids"]):
        n = lengths[i] = len(row)
        ids[i, :n] = row
        special[i, :n] = enc["special_tokens_mask"][i]
        offsets[i, :n] = enc["offset_mapping"][i]
        if types is not None:
            types[i, :n] = enc["token_type_ids"][i]
    return (
        ids,
        special,
        offsets,
        types,
        lengths,
        np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64),
    )


def featurize_batch(
    examples: Examples,
    lo: int,
    hi: int,
    tokenizer,
    spec: FeatureSpec,
    training: bool,
    context_cache=None,
) -> Dict[str, np.ndarray]:
    """Features of questions lo..hi-1 (see data.featurize); labels computed for all windows at once.
    Each distinct context is tokenized once (or taken from `context_cache`, a mapping from context
    string to its tokens with .get, when given) and cut into every question's windows exactly as
    the pair tokenizer cuts them; a tokenizer whose pair layout cannot be read off goes through
    the pair tokenizer itself (featurize_batch_pairs)."""
    with _collector_paused():
        template = pair_template(tokenizer) if hi > lo else None
        windows = (
            None
            if template is None
            else _shared_windows(examples, lo, hi, tokenizer, spec, template, context_cache)
        )
        if windows is None:
            windows = _pair_windows(examples, lo, hi, tokenizer, spec)
        return _features(examples, lo, hi, windows, spec, training)


@contextlib.contextmanager
def _collector_paused():
    """A batch's tokenizer output is tens of thousands of small lists alive at once: the cyclic
    garbage collector scans them (and everything older) again and again, which made the tokenizer
    calls several times slower. They form no cycles; reference counting frees them all the same."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def featurize_batch_pairs(
    examples: Examples, lo: int, hi: int, tokenizer, spec: FeatureSpec, training: bool
) -> Dict[str, np.ndarray]:
    """featurize_batch through the pair tokenizer's own windows: the reference it matches byte for byte."""
    return _features(
        examples, lo, hi, _pair_windows(examples, lo, hi, tokenizer, spec), spec, training
    )


def _features(
    examples: Examples, lo: int, hi: int, windows: Windows, spec: FeatureSpec, training: bool
) -> Dict[str, np.ndarray]:
    ids, special, offsets, types, lengths, local = windows
    L, m = spec.max_seq_length, len(ids)
    sample = local + lo
    is_context = _context_mask(special)
    # The batch's distinct contexts, and which one each window cuts.
    distinct, context_of_row = np.unique(
        np.asarray(examples.context_index[lo:hi])[local], return_inverse=True
    )
    _tidy_context_tokens(
        offsets, is_context, [examples.contexts[c] for c in distinct], context_of_row
    )
    out = {"input_ids": ids, "lengths": lengths, "example_index": sample.astype(np.int32)}
    if types is not None:
        out["token_type_ids"] = types
    if not training:
        offsets[~is_context] = -1
        out["offsets"] = offsets
        return out
    # This batch's questions only: converting every question per batch is quadratic.
    start_char = np.asarray(examples.answer_start[lo:hi], dtype=np.int64)[local][:, None]
    end_char = (
        start_char
        + np.asarray([len(t) for t in examples.answer_text[lo:hi]], dtype=np.int64)[local][:, None]
    )
    starts, ends = offsets[:, :, 0], offsets[:, :, 1]
    positions = np.arange(L)
    first = np.argmax(is_context, axis=1)
    last = L - 1 - np.argmax(is_context[:, ::-1], axis=1)
    rows = np.arange(m)
    inside = (starts[rows, first][:, None] <= start_char) & (ends[rows, last][:, None] >= end_char)
    inside = inside[:, 0] & ~np.asarray(examples.is_impossible[lo:hi], dtype=bool)[local]
    # Start: the last context token starting at or before the answer; end: the first ending at or after it.
    start_tok = np.where(is_context & (starts <= start_char), positions, -1).max(axis=1)
    end_tok = np.where(is_context & (ends >= end_char), positions, L).min(axis=1)
    out["start_positions"] = np.where(inside, start_tok, 0).astype(np.int16)
    out["end_positions"] = np.where(inside, end_tok, 0).astype(np.int16)
    return out


class Collator:
    """Builds a batch of tensors from feature indices, padded to the batch's longest feature
    (rounded up to a multiple of 8) or to max_seq_length when `pad_to_max`."""

    def __init__(self, arrays: Dict[str, np.ndarray], pad_to_max: bool = False):
        self.a, self.pad_to_max = arrays, pad_to_max  # input_ids are stored padded with the pad id

    def __call__(self, indices: List[int]) -> Dict[str, torch.Tensor]:
        idx = np.asarray(indices)
        lengths = self.a["lengths"][idx].astype(np.int64)
        full = self.a["input_ids"].shape[1]
        width = full if self.pad_to_max else min(full, int(math.ceil(lengths.max() / 8) * 8))
        batch = {
            "input_ids": torch.from_numpy(self.a["input_ids"][idx, :width].astype(np.int64)),
            "attention_mask": torch.from_numpy(
                (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
            ),
            "feature_index": torch.from_numpy(idx.astype(np.int64)),
        }
        if "token_type_ids" in self.a:
            batch["token_type_ids"] = torch.from_numpy(
                self.a["token_type_ids"][idx, :width].astype(np.int64)
            )
        if "start_positions" in self.a:
            batch["start_positions"] = torch.from_numpy(
                self.a["start_positions"][idx].astype(np.int64)
            )
            batch["end_positions"] = torch.from_numpy(self.a["end_positions"][idx].astype(np.int64))
        return batch
