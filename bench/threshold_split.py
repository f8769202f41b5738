"""Does the tuned no-answer threshold help on questions it was not tuned on? Splits a validation's
questions into two halves (by a hash of the id), tunes the threshold on one half (best_f1_thresh,
as the trial computes it) and scores the other half at the config's threshold and at the tuned one,
then the other way round. Prints one JSON object.

    python bench/threshold_split.py PREDICTIONS_DIR DEV_FILE [--threshold 0.0]

PREDICTIONS_DIR is a validation's output (outputs/demo/predictions/batch_N, or a checkpoint's
predictions/): its nbest_predictions.json and null_odds.json.
"""

import argparse
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import postprocess  # noqa: E402
import squad_eval  # noqa: E402


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("predictions_dir")
    parser.add_argument("dev_file")
    parser.add_argument(
        "--threshold", type=float, default=0.0, help="the config's null_score_diff_threshold"
    )
    args = parser.parse_args()
    with open(os.path.join(args.predictions_dir, "nbest_predictions.json")) as f:
        spans = postprocess.best_spans(json.load(f))
    with open(os.path.join(args.predictions_dir, "null_odds.json")) as f:
        null_odds = json.load(f)
    with open(args.dev_file) as f:
        questions = [
            qa
            for a in json.load(f)["data"]
            for p in a["paragraphs"]
            for qa in p["qas"]
            if qa["id"] in spans
        ]
    halves = [
        [qa for qa in questions if hashlib.sha256(qa["id"].encode()).digest()[0] % 2 == h]
        for h in (0, 1)
    ]

    def f1(half, threshold):
        preds = {
            qa["id"]: "" if null_odds[qa["id"]] > threshold else spans[qa["id"]] for qa in half
        }
        return squad_eval.evaluate([{"paragraphs": [{"qas": half}]}], preds)["f1"]

    out = {"questions": [len(h) for h in halves], "config_threshold": args.threshold}
    for tune, score in ((0, 1), (1, 0)):
        ids = {qa["id"] for qa in halves[tune]}
        preds = {q: "" if null_odds[q] > args.threshold else spans[q] for q in ids}
        tuned = squad_eval.evaluate(
            [{"paragraphs": [{"qas": halves[tune]}]}],
            preds,
            {q: null_odds[q] for q in ids},
            args.threshold,
            span_preds={q: spans[q] for q in ids},
        )["best_f1_thresh"]
        out[f"tuned_on_half_{tune}"] = {
            "threshold": tuned,
            f"f1_half_{score}_at_config": round(f1(halves[score], args.threshold), 2),
            f"f1_half_{score}_at_tuned": round(f1(halves[score], tuned), 2),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
