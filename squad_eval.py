"""SQuAD 2.0 metrics with the official evaluation script's definitions and interface.

    python squad_eval.py DATA.json PRED.json [--na-prob-file NA.json] [--na-prob-thresh 1.0] [-o OUT.json]

Definitions (SQuAD 2.0 official v2.0 script): answers are normalized (lower case, punctuation and
the articles a/an/the removed, whitespace collapsed); a question is answerable when its `answers`
list is non-empty; gold answers that normalize to nothing are dropped and an unanswerable
question's only gold answer is ""; exact and F1 are the maximum over gold answers; a question whose
no-answer probability exceeds the threshold counts as answered with "". Scores are percentages.
"""
import argparse
import collections
import json
import re
import string
import sys
from typing import Dict, Iterable, List, Optional

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _tokens(text: str) -> List[str]:
    return normalize_answer(text).split() if text else []


def exact_score(gold: str, pred: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(pred))


def f1_score(gold: str, pred: str) -> float:
    gold_tokens, pred_tokens = _tokens(gold), _tokens(pred)
    if not gold_tokens or not pred_tokens:
        return int(gold_tokens == pred_tokens)  # no-answer on either side: 1 only if both
    overlap = sum((collections.Counter(gold_tokens) & collections.Counter(pred_tokens)).values())
    if overlap == 0:
        return 0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _questions(articles: Iterable[dict]):
    for article in articles:
        for paragraph in article["paragraphs"]:
            yield from paragraph["qas"]


def _summary(exact: Dict[str, float], f1: Dict[str, float], qids: List[str]) -> Dict[str, float]:
    total = len(qids)
    return {"exact": 100.0 * sum(exact[q] for q in qids) / total,
            "f1": 100.0 * sum(f1[q] for q in qids) / total, "total": total}


def _best_threshold(preds, scores, na_probs, has_answer):
    """Sweep the no-answer threshold over the sorted no-answer probabilities: start from answering
    nothing (every unanswerable question right) and admit questions one by one."""
    score = best = sum(1 for q in has_answer if not has_answer[q])
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda q: na_probs[q]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            score += scores[qid]
        elif preds[qid]:
            score -= 1
        if score > best:
            best, best_thresh = score, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def evaluate(articles: List[dict], preds: Dict[str, str], na_probs: Optional[Dict[str, float]] = None,
             na_prob_thresh: float = 1.0) -> Dict[str, float]:
    """Official SQuAD 2.0 metrics for `preds` (question id → answer text, "" for no answer).
    `articles` is the file's `data` list. With `na_probs` the best_* keys are added."""
    has_answer = {qa["id"]: bool(qa["answers"]) for qa in _questions(articles)}
    missing = [q for q in has_answer if q not in preds]
    if missing:
        raise ValueError(f"{len(missing)} questions have no prediction, e.g. {missing[:3]}; every question in "
                         "the data file needs one (\"\" for no answer).")
    exact_raw, f1_raw = {}, {}
    for qa in _questions(articles):
        golds = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])] or [""]
        pred = preds[qa["id"]]
        exact_raw[qa["id"]] = max(exact_score(g, pred) for g in golds)
        f1_raw[qa["id"]] = max(f1_score(g, pred) for g in golds)
    thresholded = na_probs if na_probs is not None else {q: 0.0 for q in preds}

    def apply_threshold(raw):
        return {q: float(not has_answer[q]) if thresholded[q] > na_prob_thresh else s for q, s in raw.items()}

    exact, f1 = apply_threshold(exact_raw), apply_threshold(f1_raw)
    out = _summary(exact, f1, list(exact))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [q for q, has in has_answer.items() if has == wanted]
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in _summary(exact, f1, qids).items()})
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = _best_threshold(preds, exact_raw, na_probs, has_answer)
        out["best_f1"], out["best_f1_thresh"] = _best_threshold(preds, f1_raw, na_probs, has_answer)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="SQuAD 2.0 evaluation (official script's interface).")
    parser.add_argument("data_file", help="SQuAD JSON, e.g. dev-v2.0.json")
    parser.add_argument("pred_file", help="predictions.json: question id -> answer text")
    parser.add_argument("--out-file", "-o", help="write the metrics JSON here instead of stdout")
    parser.add_argument("--na-prob-file", "-n", help="null_odds.json: question id -> no-answer score")
    parser.add_argument("--na-prob-thresh", "-t", type=float, default=1.0,
                        help='predict "" where the no-answer score exceeds this (default 1.0)')
    args = parser.parse_args(argv)
    with open(args.data_file) as f:
        articles = json.load(f)["data"]
    with open(args.pred_file) as f:
        preds = json.load(f)
    na_probs = None
    if args.na_prob_file:
        with open(args.na_prob_file) as f:
            na_probs = json.load(f)
    try:
        metrics = evaluate(articles, preds, na_probs, args.na_prob_thresh)
    except ValueError as err:
        sys.exit(f"{args.pred_file}: {err}")
    if args.out_file:
        with open(args.out_file, "w") as f:
            json.dump(metrics, f)
    else:
        print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
