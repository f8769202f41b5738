"""Post-processing on hand-made logits: span choice, limits, the null score and its threshold."""

import json

import numpy as np
import pytest

import postprocess
import squad_eval

CONTEXT = "Draur was founded by Kalo Mira in 1628."
# Tokens: [CLS] q q [SEP] Draur was founded by Kalo Mira in 1628 . [SEP]
WORDS = [(0, 5), (6, 9), (10, 17), (18, 20), (21, 25), (26, 30), (31, 33), (34, 38), (38, 39)]


def feature_offsets():
    offsets = np.full((14, 2), -1, dtype=np.int32)
    offsets[4:13] = WORDS
    return offsets


def logits(start_at, end_at, cls=(0.0, 0.0), width=14):
    start, end = np.full(width, -5.0), np.full(width, -5.0)
    start[0], end[0] = cls
    for i, v in start_at.items():
        start[i] = v
    for i, v in end_at.items():
        end[i] = v
    return start, end


def run(features, threshold=0.0, **kw):
    example_index = np.array([e for e, _, _ in features])
    starts = np.stack([s for _, s, _ in features])
    ends = np.stack([e for _, _, e in features])
    offsets = np.stack([feature_offsets()] * len(features))
    ids = [f"q{i}" for i in range(example_index.max() + 1)]
    return postprocess.postprocess(
        ids,
        [CONTEXT] * len(ids),
        example_index,
        offsets,
        starts,
        ends,
        null_score_diff_threshold=threshold,
        **kw,
    )


def test_best_span_text_cut_from_context():
    s, e = logits({8: 4.0, 9: 1.0}, {9: 4.0, 8: 0.5})
    preds, nbest, null_odds = run([(0, s, e)])
    assert preds["q0"] == "Kalo Mira"
    assert null_odds["q0"] == pytest.approx(0.0 - 8.0)
    assert nbest["q0"][0]["text"] == "Kalo Mira"
    assert sum(x["probability"] for x in nbest["q0"]) == pytest.approx(1.0)
    assert any(x["text"] == "" for x in nbest["q0"])
    for x in nbest["q0"]:  # each candidate's character span is where its text sits in the context
        assert (
            CONTEXT[x["start"] : x["end"]] == x["text"]
            and (x["start"], x["end"]) != (0, 0)
            or x["text"] == ""
        )


def test_end_before_start_and_too_long_spans_are_rejected():
    s, e = logits({9: 5.0, 4: 1.0}, {8: 5.0, 12: 1.5})  # best pair (9, 8) is invalid
    assert run([(0, s, e)])[0]["q0"] == "Mira in 1628."  # (9, 12) beats (4, 8)
    s, e = logits(
        {9: 5.0, 4: 1.0}, {8: 5.0, 12: 1.0}
    )  # a tie goes to the earlier span, on any NumPy
    assert run([(0, s, e)])[0]["q0"] == "Draur was founded by Kalo"
    s, e = logits({8: 3.0, 4: 2.0}, {12: 3.0, 9: 2.0})
    assert run([(0, s, e)])[0]["q0"] == "Kalo Mira in 1628."
    assert run([(0, s, e)], max_answer_length=3)[0]["q0"] == "Kalo Mira"


def test_null_wins_above_threshold_and_uses_lowest_cls_over_windows():
    s, e = logits({8: 1.0}, {9: 1.0}, cls=(3.0, 3.0))  # null 6 vs span 2
    preds, _, null_odds = run([(0, s, e)])
    assert preds["q0"] == "" and null_odds["q0"] == pytest.approx(4.0)
    assert run([(0, s, e)], threshold=5.0)[0]["q0"] == "Kalo Mira"
    # A second window of the same question with a low CLS score: the minimum null score counts.
    s2, e2 = logits({}, {}, cls=(-1.0, -1.0))
    preds, _, null_odds = run([(0, s, e), (0, s2, e2)])
    assert preds["q0"] == "Kalo Mira" and null_odds["q0"] == pytest.approx(-2.0 - 2.0)


def test_spans_only_from_context_tokens_and_several_questions():
    s, e = logits({2: 9.0, 11: 2.0}, {2: 9.0, 11: 2.0})  # token 2 is a question token
    s1, e1 = logits({4: 3.0}, {4: 3.0})
    preds, _, _ = run([(0, s, e), (1, s1, e1)])
    assert preds == {"q0": "1628", "q1": "Draur"}


def test_write_predictions(tmp_path):
    s, e = logits({8: 4.0}, {9: 4.0})
    squad_eval.write_predictions(str(tmp_path), *run([(0, s, e)]), {"f1": 100.0})
    assert json.loads((tmp_path / "predictions.json").read_text()) == {"q0": "Kalo Mira"}
    assert set(json.loads((tmp_path / "null_odds.json").read_text())) == {"q0"}
    assert (
        json.loads((tmp_path / "nbest_predictions.json").read_text())["q0"][0]["text"]
        == "Kalo Mira"
    )
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"f1": 100.0}
