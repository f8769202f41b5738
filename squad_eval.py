"""SQuAD 2.0 metrics with the official evaluation script's definitions and interface.

    python squad_eval.py DATA.json PRED.json [--na-prob-file NA.json] [--na-prob-thresh 1.0] [-o OUT.json]

Definitions (SQuAD 2.0 official v2.0 script): answers are normalized (lower case, punctuation and
the articles a/an/the removed, whitespace collapsed); a question is answerable when its `answers`
list is non-empty; gold answers that normalize to nothing are dropped and an unanswerable
question's only gold answer is ""; exact and F1 are the maximum over gold answers; a question whose
no-answer probability exceeds the threshold counts as answered with "". Scores are percentages.

Every mistake in the command's arguments or files ends as one `error: ...` line on stderr with exit
code 2 (bad arguments) or 1 (a bad or unreadable file); the output file is written atomically.
"""
import argparse
import collections
import json
import math
import os
import re
import string
import sys
from typing import Dict, Iterable, List, Optional

import settings

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


def _raw_scores(articles: List[dict], preds: Dict[str, str]):
    """(exact, f1) of each question's prediction: the maximum over its gold answers."""
    exact_raw, f1_raw = {}, {}
    for qa in _questions(articles):
        golds = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])] or [""]
        pred = preds[qa["id"]]
        exact_raw[qa["id"]] = max(exact_score(g, pred) for g in golds)
        f1_raw[qa["id"]] = max(f1_score(g, pred) for g in golds)
    return exact_raw, f1_raw


def evaluate(articles: List[dict], preds: Dict[str, str], na_probs: Optional[Dict[str, float]] = None,
             na_prob_thresh: float = 1.0, span_preds: Optional[Dict[str, str]] = None) -> Dict[str, float]:
    """Official SQuAD 2.0 metrics for `preds` (question id → answer text, "" for no answer).
    `articles` is the file's `data` list. With `na_probs` the best_* keys are added: the best score
    over no-answer thresholds and that threshold. `span_preds` (each question's best non-empty
    answer) lets that sweep admit every question: with `preds` alone, one already answered "" scores
    nothing when admitted, so thresholds above the one that made `preds` are never found."""
    has_answer = {qa["id"]: bool(qa["answers"]) for qa in _questions(articles)}
    if not has_answer:
        raise ValueError("the data has no questions, so there is nothing to score.")
    missing = [q for q in has_answer if q not in preds or (span_preds is not None and q not in span_preds)]
    if missing:
        raise ValueError(f"{len(missing)} questions have no prediction, e.g. {missing[:3]}; every question in "
                         "the data file needs one (\"\" for no answer).")
    exact_raw, f1_raw = _raw_scores(articles, preds)
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
        sweep = span_preds if span_preds is not None else preds
        sweep_exact, sweep_f1 = (exact_raw, f1_raw) if span_preds is None else _raw_scores(articles, span_preds)
        out["best_exact"], out["best_exact_thresh"] = _best_threshold(sweep, sweep_exact, na_probs, has_answer)
        out["best_f1"], out["best_f1_thresh"] = _best_threshold(sweep, sweep_f1, na_probs, has_answer)
    return out


def _describe(value) -> str:
    """A JSON value as the user would recognise it in their file, on one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("-Infinity" if value < 0 else "Infinity")
    if isinstance(value, (int, float)):
        return f"the number {value}" if len(str(value)) <= 40 else "a number too large for a float"
    return "a list" if isinstance(value, list) else "an object"


def _is_finite_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs):
    # json.load keeps the last of repeated keys silently; which answer counts would be a guess.
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _load_json(path: str, what: str):
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f, object_pairs_hook=_unique_keys)
    except OSError as err:
        raise settings.UserError(f"{path}: cannot read the {what}: {err.strerror or err}; "
                                 "check the path and its permissions") from None
    except UnicodeDecodeError as err:
        raise settings.UserError(f"{path}: the {what} is not UTF-8 text ({err.reason}); "
                                 "save it as UTF-8 JSON") from None
    except _DuplicateKey as err:
        raise settings.UserError(f"{path}: the key {err.args[0]!r} appears twice in one object of the {what}; "
                                 "keep only one") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, too many digits, nested too deeply
        raise settings.UserError(f"{path}: the {what} is not valid JSON ({' '.join(str(err).split())}); "
                                 "fix or regenerate it") from None


def _check_dataset(dataset, path: str) -> List[dict]:
    """The `data` list of a SQuAD file, after checking every field that scoring reads."""
    def bad(where, expected):
        return settings.UserError(f"{path}: {where} is not {expected}; is this a SQuAD JSON file "
                                  "(like dev-v2.0.json)?")

    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise bad("the top level", 'an object with a "data" list of articles')
    seen = set()
    for i, article in enumerate(dataset["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise bad(f"data[{i}]", 'an object with a "paragraphs" list')
        for j, paragraph in enumerate(paragraphs):
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(qas, list):
                raise bad(f"data[{i}].paragraphs[{j}]", 'an object with a "qas" list')
            for k, qa in enumerate(qas):
                where = f"data[{i}].paragraphs[{j}].qas[{k}]"
                qid = qa.get("id") if isinstance(qa, dict) else None
                if not isinstance(qid, str):
                    raise bad(where, 'an object with a string "id"')
                answers = qa.get("answers")
                if not isinstance(answers, list) or not all(
                        isinstance(a, dict) and isinstance(a.get("text"), str) for a in answers):
                    raise settings.UserError(f'{path}: question {qid!r} ({where}): "answers" must be a list of '
                                             'objects with a string "text" ([] for an unanswerable question)')
                if qid in seen:
                    raise settings.UserError(f"{path}: question id {qid!r} appears twice (again at {where}); "
                                             "question ids must be unique")
                seen.add(qid)
    if not seen:
        raise settings.UserError(f"{path}: the data file has no questions, so there is nothing to score; "
                                 "pass a SQuAD file with questions")
    return dataset["data"]


def _check_mapping(mapping, path: str, what: str, qids: List[str], data_file: str, valid, expected: str):
    """`mapping` must be a JSON object of question id -> value with an entry for every question."""
    if not isinstance(mapping, dict):
        raise settings.UserError(f"{path}: the {what} file must be a JSON object of question id -> {expected}, "
                                 f"not {_describe(mapping)}")
    for qid, value in mapping.items():
        if not valid(value):
            raise settings.UserError(f"{path}: the {what} for question {qid!r} is {_describe(value)}; "
                                     f"it must be {expected}")
    missing = [q for q in qids if q not in mapping]
    if missing:
        raise settings.UserError(f"{path}: no {what} for {len(missing)} of the {len(qids)} questions in "
                                 f"{data_file}, e.g. {', '.join(map(repr, missing[:3]))}; every question needs one")
    extra = len(mapping.keys() - set(qids))
    if extra:
        print(f"warning: {path}: {extra} question ids are not in {data_file}; they are ignored", file=sys.stderr)


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _path(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("empty path; give a file name")
    return text


def _out_target(out_file: str, inputs: List[str]) -> str:
    """Where the output goes; every reason it could not be written is found before any work."""
    if os.path.exists(out_file) and not os.path.isfile(out_file) and not os.path.isdir(out_file):
        return out_file  # /dev/null, a pipe: written in place, never replaced
    target = os.path.realpath(out_file)
    parent = os.path.dirname(target)
    if any(os.path.realpath(p) == target for p in inputs if p is not None):
        raise settings.ConfigError(f"{out_file}: --out-file is one of the input files and would overwrite it; "
                                   "choose another path")
    if os.path.isdir(target):
        raise settings.UserError(f"{out_file}: --out-file is a directory; give a file path")
    if not os.path.isdir(parent):
        raise settings.UserError(f"{out_file}: the directory {parent} does not exist; create it or choose another "
                                 "--out-file")
    if not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(target) and not os.access(target, os.W_OK)):
        raise settings.UserError(f"{out_file}: cannot write the output file: permission denied; "
                                 "choose a writable path")
    return target


def _write_atomically(target: str, text: str, shown: str) -> None:
    # A temp file in the same directory and os.replace: readers never see a partial file.
    if not os.path.isfile(target) and os.path.exists(target):
        try:
            with open(target, "w", encoding="utf-8") as f:
                f.write(text)
            return
        except OSError as err:
            raise settings.UserError(f"{shown}: cannot write the output file: {err.strerror or err}") from None
    tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{os.getpid()}.tmp")
    created = False
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            created = True
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as err:
        if created:
            try:
                os.remove(tmp)
            except OSError:
                pass
        raise settings.UserError(f"{shown}: cannot write the output file: {err.strerror or err}") from None


def main(argv=None) -> None:
    parser = settings.ArgumentParser(description="SQuAD 2.0 evaluation (official script's interface).")
    parser.add_argument("data_file", type=_path, help="SQuAD JSON, e.g. dev-v2.0.json")
    parser.add_argument("pred_file", type=_path, help="predictions.json: question id -> answer text")
    parser.add_argument("--out-file", "-o", type=_path, help="write the metrics JSON here instead of stdout")
    parser.add_argument("--na-prob-file", "-n", type=_path, help="null_odds.json: question id -> no-answer score")
    parser.add_argument("--na-prob-thresh", "-t", type=_finite_float, default=1.0,
                        help='predict "" where the no-answer score exceeds this (default 1.0)')
    args = parser.parse_args(argv)
    target = None
    if args.out_file is not None:
        target = _out_target(args.out_file, [args.data_file, args.pred_file, args.na_prob_file])
    articles = _check_dataset(_load_json(args.data_file, "data file"), args.data_file)
    qids = [qa["id"] for qa in _questions(articles)]
    preds = _load_json(args.pred_file, "predictions file")
    _check_mapping(preds, args.pred_file, "prediction", qids, args.data_file, lambda v: isinstance(v, str),
                   'the answer text as a string ("" for no answer)')
    na_probs = None
    if args.na_prob_file is not None:
        na_probs = _load_json(args.na_prob_file, "no-answer probability file")
        _check_mapping(na_probs, args.na_prob_file, "no-answer probability", qids, args.data_file,
                       _is_finite_number, "a finite number")
    metrics = evaluate(articles, preds, na_probs, args.na_prob_thresh)
    if target is not None:
        _write_atomically(target, json.dumps(metrics, allow_nan=False), args.out_file)
    else:
        print(json.dumps(metrics, indent=2, allow_nan=False))


if __name__ == "__main__":
    settings.run_command(main)
