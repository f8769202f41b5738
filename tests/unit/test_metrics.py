"""Official SQuAD 2.0 metric definitions, checked on hand-worked cases, and the CLI."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

import squad_eval


def test_normalization():
    assert squad_eval.normalize_answer("The  Cat, sat!") == "cat sat"
    assert squad_eval.normalize_answer("an apple a day") == "apple day"
    assert squad_eval.normalize_answer("theater") == "theater"  # articles only as whole words


def test_f1_hand_worked():
    # gold "the big red dog" -> [big, red, dog]; pred "red dog barks" -> [red, dog, barks]
    # overlap 2: precision 2/3, recall 2/3, F1 2/3
    assert squad_eval.f1_score("the big red dog", "red dog barks") == pytest.approx(2 / 3)
    assert squad_eval.f1_score("dog", "dog dog") == pytest.approx(
        2 * 0.5 * 1 / 1.5
    )  # precision 1/2, recall 1
    assert squad_eval.f1_score("", "") == 1 and squad_eval.f1_score("", "a dog") == 0
    assert squad_eval.f1_score("the", "") == 1  # gold normalizes to nothing: both empty


def articles(*qas):
    return [{"paragraphs": [{"qas": list(qas)}]}]


def test_evaluate_hand_worked():
    data = articles(
        {
            "id": "a",
            "answers": [{"text": "Kalo Mira"}, {"text": "Mira"}],
        },  # pred "Mira": exact via 2nd gold
        {
            "id": "b",
            "answers": [{"text": "in 1628"}],
        },  # pred "1628": F1 2/3? -> [in,1628] vs [1628]: P1 R.5 F1 2/3
        {"id": "c", "answers": []},  # pred "": right
        {"id": "d", "answers": []},  # pred "x": wrong
    )
    preds = {"a": "Mira", "b": "1628", "c": "", "d": "x"}
    m = squad_eval.evaluate(data, preds)
    assert m["total"] == 4 and m["HasAns_total"] == 2 and m["NoAns_total"] == 2
    assert m["exact"] == pytest.approx(100 * 2 / 4)
    assert m["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0) / 4)
    assert m["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert m["NoAns_exact"] == pytest.approx(50.0)
    assert "best_f1" not in m
    # With no-answer scores: above the threshold counts as "" (d becomes right, b becomes wrong).
    na = {"a": -2.0, "b": 1.5, "c": 3.0, "d": 2.0}
    m = squad_eval.evaluate(data, preds, na, na_prob_thresh=1.0)
    assert m["exact"] == pytest.approx(100 * 3 / 4) and m["f1"] == pytest.approx(100 * 3 / 4)
    # Sweep in na order a(-2) b(1.5) d(2) c(3) from 2 (both unanswerable right):
    # +1 (a) =3 best@-2, +2/3 (b) =3.67 best@1.5, -1 (d) =2.67, +0 (c)  -> best_f1 = 100*3.67/4 at 1.5
    assert m["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4) and m["best_f1_thresh"] == 1.5
    assert m["best_exact"] == pytest.approx(75.0) and m["best_exact_thresh"] == -2.0


def test_missing_prediction_is_an_error():
    with pytest.raises(ValueError, match="no prediction"):
        squad_eval.evaluate(articles({"id": "a", "answers": []}), {})


def test_cli_matches_library(tmp_path):
    # squad_eval.py reads its data file with the rules every consumer applies (squad_file):
    # a complete SQuAD record, context, question and answer_start included.
    qas = [
        {"id": "a", "question": "Who?", "answers": [{"text": "Kalo", "answer_start": 0}]},
        {"id": "b", "question": "Why?", "answers": []},
    ]
    data = {"version": "v2.0", "data": [{"paragraphs": [{"context": "Kalo Mira", "qas": qas}]}]}
    (tmp_path / "data.json").write_text(json.dumps(data))
    (tmp_path / "pred.json").write_text(json.dumps({"a": "Kalo", "b": "Kalo"}))
    (tmp_path / "na.json").write_text(json.dumps({"a": 0.2, "b": 1.7}))
    subprocess.run(
        [
            sys.executable,
            f"{ROOT}/squad_eval.py",
            str(tmp_path / "data.json"),
            str(tmp_path / "pred.json"),
            "--na-prob-file",
            str(tmp_path / "na.json"),
            "--na-prob-thresh",
            "1.0",
            "-o",
            str(tmp_path / "out.json"),
        ],
        check=True,
    )
    out = json.loads((tmp_path / "out.json").read_text())
    assert out == squad_eval.evaluate(
        data["data"], {"a": "Kalo", "b": "Kalo"}, {"a": 0.2, "b": 1.7}, 1.0
    )
    assert out["exact"] == 100.0  # b's no-answer score 1.7 > 1.0, so b counts as ""
    printed = subprocess.run(
        [
            sys.executable,
            f"{ROOT}/squad_eval.py",
            str(tmp_path / "data.json"),
            str(tmp_path / "pred.json"),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert json.loads(printed)["exact"] == 50.0
