"""SQuAD 2.0 metrics with the official evaluation script's definitions and interface.

    python squad_eval.py DATA.json PRED.json [--na-prob-file NA.json] [--na-prob-thresh 1.0] [-o OUT.json]
                         [--out-image-dir DIR]

Definitions (SQuAD 2.0 official v2.0 script): answers are normalized (lower case, punctuation and
the articles a/an/the removed, whitespace collapsed); a question is answerable when its `answers`
list is non-empty; gold answers that normalize to nothing are dropped and an unanswerable
question's only gold answer is ""; exact and F1 are the maximum over gold answers; a question whose
no-answer probability exceeds the threshold counts as answered with "". Scores are percentages.
With --na-prob-file, --out-image-dir (-p) adds pr_exact_ap, pr_f1_ap and pr_oracle_ap and draws the
precision-recall curves and no-answer histograms there (see `pr_curve`; needs matplotlib).
As a library it also writes the files it reads and writes (`write_predictions`, `write_figures`)
for the trial's evaluation and predict.py.

Every mistake in the command's arguments or files ends as one `error: ...` line on stderr with exit
code 2 (bad arguments) or 1 (a bad or unreadable file); the output file is written atomically.
"""

import argparse
import collections
import contextlib
import importlib.util
import io
import json
import math
import os
import re
import string
import sys
from typing import Dict, List, Optional

import errors
import files
import squad_file

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


def _summary(exact: Dict[str, float], f1: Dict[str, float], qids: List[str]) -> Dict[str, float]:
    total = len(qids)
    return {
        "exact": 100.0 * sum(exact[q] for q in qids) / total,
        "f1": 100.0 * sum(f1[q] for q in qids) / total,
        "total": total,
    }


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
    for qa in squad_file.questions(articles):
        golds = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])] or [""]
        pred = preds[qa["id"]]
        exact_raw[qa["id"]] = max(exact_score(g, pred) for g in golds)
        f1_raw[qa["id"]] = max(f1_score(g, pred) for g in golds)
    return exact_raw, f1_raw


def evaluate(
    articles: List[dict],
    preds: Dict[str, str],
    na_probs: Optional[Dict[str, float]] = None,
    na_prob_thresh: float = 1.0,
    span_preds: Optional[Dict[str, str]] = None,
) -> Dict[str, float]:
    """Official SQuAD 2.0 metrics for `preds` (question id → answer text, "" for no answer).
    `articles` is the file's `data` list. With `na_probs` the best_* keys are added: the best score
    over no-answer thresholds and that threshold. `span_preds` (each question's best non-empty
    answer) lets that sweep admit every question: with `preds` alone, one already answered "" scores
    nothing when admitted, so thresholds above the one that made `preds` are never found."""
    has_answer = {qa["id"]: bool(qa["answers"]) for qa in squad_file.questions(articles)}
    if not has_answer:
        raise ValueError("the data has no questions, so there is nothing to score.")
    missing = [
        q for q in has_answer if q not in preds or (span_preds is not None and q not in span_preds)
    ]
    if missing:
        raise ValueError(
            f"{len(missing)} questions have no prediction, e.g. {missing[:3]}; every question in "
            'the data file needs one ("" for no answer).'
        )
    exact_raw, f1_raw = _raw_scores(articles, preds)
    thresholded = na_probs if na_probs is not None else {q: 0.0 for q in preds}

    def apply_threshold(raw):
        return {
            q: float(not has_answer[q]) if thresholded[q] > na_prob_thresh else s
            for q, s in raw.items()
        }

    exact, f1 = apply_threshold(exact_raw), apply_threshold(f1_raw)
    out = _summary(exact, f1, list(exact))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [q for q, has in has_answer.items() if has == wanted]
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in _summary(exact, f1, qids).items()})
    if na_probs is not None:
        sweep = span_preds if span_preds is not None else preds
        sweep_exact, sweep_f1 = (
            (exact_raw, f1_raw) if span_preds is None else _raw_scores(articles, span_preds)
        )
        out["best_exact"], out["best_exact_thresh"] = _best_threshold(
            sweep, sweep_exact, na_probs, has_answer
        )
        out["best_f1"], out["best_f1_thresh"] = _best_threshold(
            sweep, sweep_f1, na_probs, has_answer
        )
    return out


# Precision-recall analysis: the official script's --out-image-dir (curves, AP, histograms).


def pr_curve(scores: Dict[str, float], na_probs: Dict[str, float], has_answer: Dict[str, bool]):
    """(AP in percent, precisions, recalls) of the official curve. Questions are admitted in order of
    rising no-answer probability (ties keep `na_probs`' order); an answerable one adds its score to
    the true positives. After the last question of each distinct probability (where a threshold can
    fall) a point is taken: precision = true positives / questions admitted, recall = true positives
    / answerable questions. The curve starts at precision 1, recall 0; AP is the sum over points of
    precision times the recall gained."""
    order = sorted((q for q in na_probs if q in has_answer), key=na_probs.get)
    positives = sum(has_answer.values())
    true_pos = ap = 0.0
    precisions, recalls = [1.0], [0.0]
    for i, qid in enumerate(order):
        if has_answer[qid]:
            true_pos += scores[qid]
        if i + 1 < len(order) and na_probs[order[i + 1]] == na_probs[qid]:
            continue  # no threshold separates equal probabilities
        precision, recall = true_pos / (i + 1), true_pos / positives
        ap += precision * (recall - recalls[-1])
        precisions.append(precision)
        recalls.append(recall)
    return 100.0 * ap, precisions, recalls


def precision_recall(articles: List[dict], preds: Dict[str, str], na_probs: Dict[str, float]):
    """{"exact", "f1", "oracle"} -> pr_curve's (AP, precisions, recalls), or {} when no question is
    answerable (the official script then adds no AP). exact and F1 score each question's prediction
    with no threshold applied; oracle scores 1 for every answerable question. The official script
    passes the final predictions; each question's best non-empty answer credits also the answerable
    questions that the threshold answered with ""."""
    has_answer = {qa["id"]: bool(qa["answers"]) for qa in squad_file.questions(articles)}
    missing = [q for q in has_answer if q not in preds or q not in na_probs]
    if missing:
        raise ValueError(
            f"{len(missing)} questions have no prediction or no-answer probability, e.g. {missing[:3]}"
        )
    if not any(has_answer.values()):
        return {}
    exact_raw, f1_raw = _raw_scores(articles, preds)
    oracle = {q: float(has) for q, has in has_answer.items()}
    return {
        name: pr_curve(scores, na_probs, has_answer)
        for name, scores in (("exact", exact_raw), ("f1", f1_raw), ("oracle", oracle))
    }


def pr_metrics(curves) -> Dict[str, float]:
    """The official metric keys of precision_recall's curves: pr_exact_ap, pr_f1_ap, pr_oracle_ap."""
    return {f"pr_{name}_ap": curve[0] for name, curve in curves.items()}


def figures(articles: List[dict], na_probs: Dict[str, float], curves) -> dict:
    """The official figures as matplotlib Figures keyed by file name: pr_exact.png, pr_f1.png and
    pr_oracle.png (one per curve), na_prob_hist_hasAns.png and na_prob_hist_noAns.png (where there
    are such questions): 20 bins over [0, 1], bars the share of the group. Scores outside [0, 1]
    (this project's null_odds) get bins from their 1st to 99th percentile, the rest clipped into
    the end bins. Drawn on Agg canvases without pyplot: no global state changes."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def new_axes(name, title, xlabel, ylabel):
        fig = Figure(figsize=(5, 4), dpi=100)
        FigureCanvasAgg(fig)
        out[name] = fig
        ax = fig.add_subplot()
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        return ax

    out = {}
    names = {"exact": "exact match", "f1": "F1", "oracle": "oracle (answerable or not)"}
    for name, (ap, precisions, recalls) in curves.items():
        ax = new_axes(
            f"pr_{name}.png", f"Precision-recall, {names[name]}: AP {ap:.2f}", "Recall", "Precision"
        )
        ax.step(recalls, precisions, where="post", color="b", alpha=0.2)
        ax.fill_between(recalls, precisions, step="post", color="b", alpha=0.2)
        ax.set(xlim=(0.0, 1.05), ylim=(0.0, 1.05))
    has_answer = {qa["id"]: bool(qa["answers"]) for qa in squad_file.questions(articles)}
    values = [na_probs[q] for q in has_answer]
    low, high, xlabel = 0.0, 1.0, "No-answer probability"
    if not all(0.0 <= v <= 1.0 for v in values):
        low, high = (float(v) for v in np.percentile(values, [1, 99]))
        xlabel = "No-answer score (1st to 99th percentile)"
    for label, wanted, group in (("hasAns", True, "answerable"), ("noAns", False, "unanswerable")):
        x = np.clip([na_probs[q] for q, has in has_answer.items() if has == wanted], low, high)
        if len(x):
            ax = new_axes(
                f"na_prob_hist_{label}.png",
                f"No-answer scores of {len(x)} {group} questions",
                xlabel,
                "Share of the questions",
            )
            ax.hist(x, bins=20, range=(low, high), weights=np.full(len(x), 1.0 / len(x)))
    for fig in out.values():
        fig.tight_layout()  # keeps the axis labels inside the picture
    return out


def figure_png(fig) -> bytes:
    """A figure from `figures` as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def figure_rgb(fig):
    """A figure from `figures` as a (height, width, 3) uint8 array (TensorBoard's add_image, HWC)."""
    import numpy as np

    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def write_figures(out_dir: str, figs: dict) -> List[str]:
    """Writes each figure as PNG into `out_dir`, created if missing as the official script does, and
    returns the paths. All are rendered first, then written to temp files and renamed together: an
    error (UserError) leaves no partial or temp file and no directory made here."""
    pngs = {name: figure_png(fig) for name, fig in figs.items()}
    missing, parent = [], os.path.abspath(out_dir)
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    made = []
    try:
        for path in reversed(missing):
            os.mkdir(path)
            made.append(path)
        with (
            contextlib.ExitStack() as stack
        ):  # every file renamed into place only once all are written
            for name, png in pngs.items():
                with open(
                    stack.enter_context(files.atomic_file(os.path.join(out_dir, name))), "wb"
                ) as f:
                    f.write(png)
    except (OSError, errors.DiskFull) as err:
        for path in made[::-1]:
            try:
                os.rmdir(path)
            except OSError:
                pass
        if isinstance(err, errors.DiskFull):
            raise
        raise errors.UserError(
            f"{out_dir}: cannot write the images: {err.strerror or err}; "
            "choose a writable --out-image-dir"
        ) from None
    return [os.path.join(out_dir, name) for name in pngs]


def write_predictions(
    out_dir: str, predictions: dict, nbest: dict, null_odds: dict, metrics: dict
) -> None:
    """predictions.json, nbest_predictions.json, null_odds.json (the official script's inputs) and
    metrics.json (its output) into `out_dir`, each written atomically."""
    os.makedirs(out_dir, exist_ok=True)
    for name, obj in (
        ("predictions.json", predictions),
        ("nbest_predictions.json", nbest),
        ("null_odds.json", null_odds),
        ("metrics.json", metrics),
    ):
        with files.atomic_file(os.path.join(out_dir, name)) as tmp, open(tmp, "w") as f:
            json.dump(obj, f, indent=1 if name != "nbest_predictions.json" else None)


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


def _load_json(path: str, what: str):
    try:
        with open(path, encoding="utf-8-sig") as f:
            return squad_file.parse_json(f.read())
    except OSError as err:
        raise errors.UserError(
            f"{path}: cannot read the {what}: {err.strerror or err}; "
            "check the path and its permissions"
        ) from None
    except UnicodeDecodeError as err:
        raise errors.UserError(
            f"{path}: the {what} is not UTF-8 text ({err.reason}); " "save it as UTF-8 JSON"
        ) from None
    except squad_file.DuplicateKey as err:
        # json.load keeps the last of repeated keys silently; which answer counts would be a guess.
        raise errors.UserError(
            f"{path}: the key {err.args[0]!r} appears twice in one object of the {what}; "
            "keep only one"
        ) from None
    except (
        ValueError,
        RecursionError,
    ) as err:  # JSONDecodeError, too many digits, nested too deeply
        raise errors.UserError(
            f"{path}: the {what} is not valid JSON ({' '.join(str(err).split())}); "
            "fix or regenerate it"
        ) from None


def _check_mapping(
    mapping, path: str, what: str, qids: List[str], data_file: str, valid, expected: str
):
    """`mapping` must be a JSON object of question id -> value with an entry for every question."""
    if not isinstance(mapping, dict):
        raise errors.UserError(
            f"{path}: the {what} file must be a JSON object of question id -> {expected}, "
            f"not {_describe(mapping)}"
        )
    for qid, value in mapping.items():
        if not valid(value):
            raise errors.UserError(
                f"{path}: the {what} for question {qid!r} is {_describe(value)}; "
                f"it must be {expected}"
            )
    missing = [q for q in qids if q not in mapping]
    if missing:
        raise errors.UserError(
            f"{path}: no {what} for {len(missing)} of the {len(qids)} questions in "
            f"{data_file}, e.g. {', '.join(map(repr, missing[:3]))}; every question needs one"
        )
    extra = len(mapping.keys() - set(qids))
    if extra:
        print(
            f"warning: {path}: {extra} question ids are not in {data_file}; they are ignored",
            file=sys.stderr,
        )


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
        raise errors.ConfigError(
            f"{out_file}: --out-file is one of the input files and would overwrite it; "
            "choose another path"
        )
    if os.path.isdir(target):
        raise errors.UserError(f"{out_file}: --out-file is a directory; give a file path")
    if not os.path.isdir(parent):
        raise errors.UserError(
            f"{out_file}: the directory {parent} does not exist; create it or choose another "
            "--out-file"
        )
    if not os.access(parent, os.W_OK | os.X_OK) or (
        os.path.exists(target) and not os.access(target, os.W_OK)
    ):
        raise errors.UserError(
            f"{out_file}: cannot write the output file: permission denied; "
            "choose a writable path"
        )
    return target


def _write_atomically(target: str, text: str, shown: str) -> None:
    """Readers never see a partial file (files.atomic_file); a target that is not a regular file
    (/dev/null, a pipe) is written in place, never replaced."""
    try:
        if not os.path.isfile(target) and os.path.exists(target):
            with open(target, "w", encoding="utf-8") as f:
                f.write(text)
            return
        with files.atomic_file(target) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as err:
        raise errors.UserError(
            f"{shown}: cannot write the output file: {err.strerror or err}"
        ) from None


def _check_image_dir(out_dir: str) -> None:
    """Before any work: matplotlib is there and `out_dir` is, or can be made, a writable directory."""
    if (
        importlib.util.find_spec("matplotlib") is None
    ):  # found, not imported: no work before the checks
        raise errors.UserError(
            "--out-image-dir needs matplotlib, which is not installed: pip install matplotlib"
        )
    existing = os.path.abspath(out_dir)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise errors.UserError(
            f"{out_dir}: {existing} is not a directory; choose another --out-image-dir"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise errors.UserError(
            f"{out_dir}: cannot write the images in {existing}: permission denied; "
            "choose a writable --out-image-dir"
        )


def main(argv=None) -> None:
    parser = errors.ArgumentParser(
        description="SQuAD 2.0 evaluation (official script's interface)."
    )
    parser.add_argument(
        "data_file",
        type=_path,
        help="a SQuAD file, e.g. dev-v2.0.json (or the flat layout as JSON, JSON lines, parquet)",
    )
    parser.add_argument(
        "pred_file", type=_path, help="predictions.json: question id -> answer text"
    )
    parser.add_argument(
        "--out-file", "-o", type=_path, help="write the metrics JSON here instead of stdout"
    )
    parser.add_argument(
        "--na-prob-file", "-n", type=_path, help="null_odds.json: question id -> no-answer score"
    )
    parser.add_argument(
        "--na-prob-thresh",
        "-t",
        type=errors.finite_float,
        default=1.0,
        help='predict "" where the no-answer score exceeds this (default 1.0)',
    )
    parser.add_argument(
        "--out-image-dir",
        "-p",
        type=_path,
        metavar="DIR",
        help="add pr_*_ap to the metrics and save precision-recall curves and no-answer "
        "histograms (PNG) here; needs --na-prob-file and matplotlib",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip invalid records of the data file (logged and counted) instead of stopping",
    )
    args = parser.parse_args(argv)
    if args.out_image_dir is not None:
        if args.na_prob_file is None:
            parser.error("--out-image-dir needs --na-prob-file: the curves order questions by it")
        _check_image_dir(args.out_image_dir)
    target = None
    if args.out_file is not None:
        target = _out_target(args.out_file, [args.data_file, args.pred_file, args.na_prob_file])
    try:  # the rules every reader of SQuAD records applies (squad_file)
        records = squad_file.read(
            args.data_file, "validation", args.skip_invalid, squad_file.COMMAND_ADVICE
        )
    except OSError as err:
        raise errors.UserError(
            f"{args.data_file}: cannot read the data file: {err.strerror or err}; "
            "check the path and its permissions"
        ) from None
    articles = records.articles()
    qids = [qa["id"] for qa in squad_file.questions(articles)]
    preds = _load_json(args.pred_file, "predictions file")
    _check_mapping(
        preds,
        args.pred_file,
        "prediction",
        qids,
        args.data_file,
        lambda v: isinstance(v, str),
        'the answer text as a string ("" for no answer)',
    )
    na_probs = None
    if args.na_prob_file is not None:
        na_probs = _load_json(args.na_prob_file, "no-answer probability file")
        _check_mapping(
            na_probs,
            args.na_prob_file,
            "no-answer probability",
            qids,
            args.data_file,
            _is_finite_number,
            "a finite number",
        )
    metrics = evaluate(articles, preds, na_probs, args.na_prob_thresh)
    if args.out_image_dir is not None:
        curves = precision_recall(articles, preds, na_probs)
        metrics.update(pr_metrics(curves))
        write_figures(args.out_image_dir, figures(articles, na_probs, curves))
    if target is not None:
        _write_atomically(target, json.dumps(metrics, allow_nan=False), args.out_file)
    else:
        print(json.dumps(metrics, indent=2, allow_nan=False))


if __name__ == "__main__":
    errors.run_command(main)
