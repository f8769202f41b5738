"""Start/end logits per feature → answer text per question (SQuAD 2.0 post-processing).

For each feature the `n_best_size` highest start and end logits over context tokens form candidate
spans (end ≥ start, at most `max_answer_length` tokens); a span's score is start + end logit. The
null (no-answer) score of a question is the lowest CLS score (start[0] + end[0]) over its features.
A question is answered "" when null score − best span score > `null_score_diff_threshold`; that
difference is its entry in null_odds.json. N-best entries carry the answer's character span
(start, end) in the context; the no-answer entry has 0, 0. Vectorized with NumPy over all features at once.
"""

from typing import Dict, Sequence, Tuple

import numpy as np

NO_SPAN_ODDS = 1e9  # null_odds of a question that has no valid span at all


def _top_k(logits: np.ndarray, k: int) -> np.ndarray:
    k = min(k, logits.shape[1])
    return np.argpartition(-logits, k - 1, axis=1)[:, :k]


def postprocess(
    example_ids: Sequence[str],
    contexts: Sequence[str],
    example_index: np.ndarray,
    offsets: np.ndarray,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    null_score_diff_threshold: float = 0.0,
) -> Tuple[Dict[str, str], Dict[str, list], Dict[str, float]]:
    """Returns (predictions, nbest, null_odds), each keyed by question id.

    example_index[f] is the question of feature f; offsets[f, t] the (start, end) characters of
    token t in that question's context, -1 for tokens outside the context; logits [features, T]
    (T may be shorter than offsets' width: the rest is padding)."""
    n_features, width = start_logits.shape
    offsets = np.asarray(offsets[:, :width])
    is_context = offsets[:, :, 0] >= 0
    start = np.where(is_context, start_logits, -np.inf).astype(np.float64)
    end = np.where(is_context, end_logits, -np.inf).astype(np.float64)
    null = start_logits[:, 0].astype(np.float64) + end_logits[:, 0]

    # Candidate spans: top-k starts × top-k ends per feature.
    s_idx, e_idx = _top_k(start, n_best_size), _top_k(end, n_best_size)
    rows = np.arange(n_features)[:, None, None]
    s = np.broadcast_to(s_idx[:, :, None], (n_features, s_idx.shape[1], e_idx.shape[1]))
    e = np.broadcast_to(e_idx[:, None, :], s.shape)
    score = start[rows, s] + end[rows, e]
    ok = (e >= s) & (e - s + 1 <= max_answer_length) & np.isfinite(score)
    feat, s, e, score = np.broadcast_to(rows, s.shape)[ok], s[ok], e[ok], score[ok]
    example = example_index[feat]
    # Best first within each question; keep at most n_best_size per question. Equal scores go by
    # feature, start, end: argpartition's order of ties differs between NumPy versions.
    order = np.lexsort((e, s, feat, -score, example))
    feat, s, e, score, example = feat[order], s[order], e[order], score[order], example[order]
    first = np.searchsorted(example, np.arange(len(example_ids)), side="left")
    last = np.searchsorted(example, np.arange(len(example_ids)), side="right")

    # The feature with the lowest CLS score gives each question's null score.
    by_null = np.lexsort((null, example_index))
    null_feature = by_null[np.searchsorted(example_index[by_null], np.arange(len(example_ids)))]
    predictions, nbest, null_odds = {}, {}, {}
    for q, qid in enumerate(example_ids):
        lo, hi = first[q], min(last[q], first[q] + n_best_size)
        context, nf = contexts[q], null_feature[q]
        entries = [
            {
                "text": context[offsets[f, a, 0] : offsets[f, b, 1]],
                "start": int(offsets[f, a, 0]),
                "end": int(offsets[f, b, 1]),
                "score": float(sc),
                "start_logit": float(start[f, a]),
                "end_logit": float(end[f, b]),
            }
            for f, a, b, sc in zip(feat[lo:hi], s[lo:hi], e[lo:hi], score[lo:hi])
        ]
        best_text = entries[0]["text"] if entries else ""
        entries.append(
            {
                "text": "",
                "start": 0,
                "end": 0,
                "score": float(null[nf]),
                "start_logit": float(start_logits[nf, 0]),
                "end_logit": float(end_logits[nf, 0]),
            }
        )
        entries.sort(key=lambda x: -x["score"])
        probs = np.exp(np.array([x["score"] for x in entries]) - entries[0]["score"])
        for entry, p in zip(entries, probs / probs.sum()):
            entry["probability"] = float(p)
        nbest[qid] = entries
        # With no valid span in any window, no-answer is the only answer: NO_SPAN_ODDS marks it.
        null_odds[qid] = float(null[nf] - score[lo]) if hi > lo else NO_SPAN_ODDS
        predictions[qid] = "" if null_odds[qid] > null_score_diff_threshold else best_text
    return predictions, nbest, null_odds


def stack_logits(parts: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """(feature_index, start_logits, end_logits) of batches of (feature_index, start, end) whose
    widths differ (each padded to its longest feature), as one array each: the narrower batches
    padded with -1e4, a score no span wins with."""
    width = max([p[1].shape[1] for p in parts], default=1)
    index = np.concatenate([p[0] for p in parts] or [np.zeros(0, dtype=np.int64)])
    start, end = (
        np.concatenate(
            [
                np.pad(p[k], [(0, 0), (0, width - p[k].shape[1])], constant_values=-1e4)
                for p in parts
            ]
            or [np.zeros((0, width), np.float32)]
        )
        for k in (1, 2)
    )
    return index, start, end


def best_spans(nbest: Dict[str, list]) -> Dict[str, str]:
    """Each question's best non-empty answer, whatever the threshold (for tuning it)."""
    return {q: next((x["text"] for x in entries if x["text"]), "") for q, entries in nbest.items()}
