"""Question + context → token windows → padded batches: what training, evaluation, predict.py and
the exported model's Hugging Face pipeline share. Needs only NumPy, torch and a fast tokenizer, so
an exported model directory carries this file (qa_pipeline.save) without the rest of the project."""
import dataclasses
import math
from typing import Dict, List

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


def truncate_questions(questions: List[str], tokenizer, max_query_length: int) -> List[str]:
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for q, offsets in zip(questions, enc["offset_mapping"]):
        out.append(q[:offsets[max_query_length - 1][1]] if len(offsets) > max_query_length else q)
    return out


def _context_mask(special: np.ndarray) -> np.ndarray:
    """Context tokens of [CLS] question [SEP] (+[SEP]) context [SEP] [PAD]...: the ordinary tokens
    after the first special token that follows an ordinary one. Works for every family's template."""
    ordinary = ~special
    boundary = np.zeros_like(special)
    boundary[:, 1:] = special[:, 1:] & ordinary[:, :-1]
    return ordinary & (np.cumsum(boundary, axis=1) == 1)


# Every code point Python counts as whitespace (the highest is U+3000).
_WHITESPACE = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)


def _tidy_context_tokens(offsets: np.ndarray, is_context: np.ndarray, contexts: List[str],
                         context_of_row: np.ndarray) -> None:
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
    inside_next = (starts[:, :-1] == starts[:, 1:]) & (ends[:, :-1] <= ends[:, 1:]) & is_context[:, 1:]
    is_context[:, :-1] &= ~inside_next


def featurize_batch(examples: Examples, lo: int, hi: int, tokenizer, spec: FeatureSpec,
                    training: bool) -> Dict[str, np.ndarray]:
    """Features of questions lo..hi-1 (see featurize); labels computed for all windows at once."""
    L = spec.max_seq_length
    questions = truncate_questions(examples.questions[lo:hi], tokenizer, spec.max_query_length)
    contexts = [examples.contexts[i] for i in examples.context_index[lo:hi]]
    enc = tokenizer(questions, contexts, truncation="only_second", max_length=L, stride=spec.doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True,
                    return_token_type_ids=spec.token_type_ids)
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
    sample = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64) + lo
    is_context = _context_mask(special)
    # The batch's distinct contexts, and which one each window cuts.
    distinct, context_of_row = np.unique(np.asarray(examples.context_index[lo:hi])[sample - lo], return_inverse=True)
    _tidy_context_tokens(offsets, is_context, [examples.contexts[c] for c in distinct], context_of_row)
    out = {"input_ids": ids, "lengths": lengths, "example_index": sample.astype(np.int32)}
    if types is not None:
        out["token_type_ids"] = types
    if not training:
        offsets[~is_context] = -1
        out["offsets"] = offsets
        return out
    local = sample - lo  # this batch's questions only: converting every question per batch is quadratic
    start_char = np.asarray(examples.answer_start[lo:hi], dtype=np.int64)[local][:, None]
    end_char = start_char + np.asarray([len(t) for t in examples.answer_text[lo:hi]], dtype=np.int64)[local][:, None]
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
            "attention_mask": torch.from_numpy((np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)),
            "feature_index": torch.from_numpy(idx.astype(np.int64)),
        }
        if "token_type_ids" in self.a:
            batch["token_type_ids"] = torch.from_numpy(self.a["token_type_ids"][idx, :width].astype(np.int64))
        if "start_positions" in self.a:
            batch["start_positions"] = torch.from_numpy(self.a["start_positions"][idx].astype(np.int64))
            batch["end_positions"] = torch.from_numpy(self.a["end_positions"][idx].astype(np.int64))
        return batch
