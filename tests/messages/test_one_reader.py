"""Every consumer of SQuAD records against the others, on the same files: feature building (the
trial's `data` step), the trial's scoring (evaluation.SquadEvaluator), `predict.py --file`,
`data.py audit` and `squad_eval.py`. Each file is accepted by all of them, or refused by all with the
same message (only the advice differs: the config key for training, --skip-invalid for commands);
and with skipping turned on, every consumer keeps the same questions."""

import contextlib
import io
import json
import logging

import make_squad_data
import pytest
from squad_layouts import flat_records as flat

import data
import errors
import evaluation
import predict
import settings
import squad_eval
import squad_file

SPEC = data.FeatureSpec(max_seq_length=64, doc_stride=24, max_query_length=16)
AUDIT_ARGS = ["--max-seq-length", "64", "--doc-stride", "24", "--max-query-length", "16"]


def nested():
    return make_squad_data.make_dataset(12, 7, 2, "validation")


def first(d, answerable):
    return next(
        qa
        for a in d["data"]
        for p in a["paragraphs"]
        for qa in p["qas"]
        if bool(qa["answers"]) == answerable
    )


def change(edit):
    def make():
        d = nested()
        edit(d)
        return json.dumps(d)

    return make


def flat_change(edit, lines=False):
    def make():
        records = flat(nested())
        edit(records)
        if lines:
            return "\n".join(json.dumps(r) for r in records) + "\n"
        return json.dumps(records)

    return make


def pop_answers_keep_impossible(d):
    first(d, False).pop("answers")  # is_impossible: true stays


def pop_answers_and_impossible(d):
    qa = first(d, False)
    qa.pop("answers")
    qa.pop("is_impossible")


def empty_answers_no_impossible(d):
    first(d, False).pop("is_impossible")  # answers: [] stays


def drop_answer_start(d):
    first(d, True)["answers"][0].pop("answer_start")


def drop_context(d):
    d["data"][0]["paragraphs"][0].pop("context")


def duplicate_id(d):
    qas = d["data"][0]["paragraphs"][0]["qas"]
    qas[1]["id"] = qas[0]["id"]


def impossible_string(d):
    first(d, False)["is_impossible"] = "true"


def mismatched_lists(records):
    records[0]["answers"]["answer_start"] = []


def no_context_record(records):
    records[2].pop("context")


# (name, file text, accepted?, the message's record and problem when refused)
FILES = [
    ("valid", change(lambda d: None), True, None),
    ("unanswerable-without-answers-key", change(pop_answers_keep_impossible), True, None),
    ("empty-answers-without-is-impossible", change(empty_answers_no_impossible), True, None),
    (
        "no-answers-no-is-impossible",
        change(pop_answers_and_impossible),
        False,
        "without answers (no 'answers' key",
    ),
    ("answer-without-start", change(drop_answer_start), False, "'answer_start' must be"),
    ("paragraph-without-context", change(drop_context), False, "empty or missing context"),
    ("duplicate-id", change(duplicate_id), False, "duplicate question id"),
    ("is-impossible-string", change(impossible_string), False, "'is_impossible' must be"),
    ("flat-json-valid", flat_change(lambda r: None), True, None),
    ("flat-jsonl-valid", flat_change(lambda r: None, lines=True), True, None),
    (
        "flat-jsonl-mismatched-answers",
        flat_change(mismatched_lists, lines=True),
        False,
        "'answers' must hold 'text' and 'answer_start' lists",
    ),
    (
        "flat-json-record-without-context",
        flat_change(no_context_record),
        False,
        "empty or missing context",
    ),
]


def features_of(path, tokenizer, cache_dir, skip):
    features, _ = data.load_or_build_features(
        path, tokenizer, SPEC, "validation", str(cache_dir), skip_invalid=skip
    )
    return features


def consumers(path, tiny_model, tokenizer, tmp_path, skip):
    """{consumer: the question ids it kept (accepted) or the error message (refused)}."""
    ids = [qa["id"] for qa in squad_file.read(path, skip_invalid=True, quiet=True).questions]
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({qid: "" for qid in ids}))
    flag = ["--skip-invalid"] if skip else []

    def trial_features():
        return sorted(set(features_of(path, tokenizer, tmp_path / "cache", skip).example_ids))

    def trial_scoring():
        # The evaluator scores what the features kept, reading the file again at validation.
        features = features_of(path, tokenizer, tmp_path / "cache", skip)
        hp = settings.hyperparameters({"pretrained_model_name": "x", "global_batch_size": 1})
        scorer = evaluation.SquadEvaluator(features, path, hp, None)
        kept = sorted(set(features.example_ids))
        metrics = scorer.score({q: "" for q in kept}, {q: [] for q in kept}, {q: 0.0 for q in kept})
        assert metrics["total"] == len(kept)
        return kept

    def run(main, argv):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            main(argv)
        text = out.getvalue().strip()
        try:  # squad_eval.py prints indented JSON; the others one line last
            return json.loads(text)
        except ValueError:
            return json.loads(text.splitlines()[-1])

    def predict_file():
        metrics = run(predict.main, [tiny_model, "--file", path, *flag])
        return metrics["total"]

    def audit():
        report = run(data.main, ["audit", path, "--model", tiny_model, *AUDIT_ARGS, *flag])
        return report["examples"]

    def score():
        return run(squad_eval.main, [path, str(preds), *flag])["total"]

    got = {}
    for name, call in [
        ("features", trial_features),
        ("trial scoring", trial_scoring),
        ("predict.py --file", predict_file),
        ("data.py audit", audit),
        ("squad_eval.py", score),
    ]:
        try:
            result = call()
            got[name] = len(result) if isinstance(result, list) else result
        except errors.UserError as err:
            got[name] = str(err)
    return got


@pytest.mark.parametrize(
    "text, accepted, problem", [f[1:] for f in FILES], ids=[f[0] for f in FILES]
)
def test_consumers_agree_on_each_file(
    tmp_path, tiny_model, tokenizer, caplog, text, accepted, problem
):
    path = str(tmp_path / "squad.data")  # no telling extension: the layout is read from the content
    with open(path, "w") as f:
        f.write(text())
    strict = consumers(path, tiny_model, tokenizer, tmp_path, skip=False)
    if accepted:
        counts = set(strict.values())
        assert len(counts) == 1 and all(isinstance(n, int) for n in counts), strict
        return
    # Refused by all, with one message but for the advice each can follow.
    for name, message in strict.items():
        assert isinstance(message, str) and message.startswith(f"{path}: "), (name, message)
        assert problem in message, (name, message)
        advice = (
            "set data.skip_invalid_examples: true"
            if name in ("features", "trial scoring")
            else "pass --skip-invalid"
        )
        assert message.endswith(f"Fix the record, or {advice} to skip it."), (name, message)
    assert len({m.split(". Fix the record")[0] for m in strict.values()}) == 1, strict
    # Skipping as advised: every consumer keeps the same questions, and says how many were lost.
    with caplog.at_level(logging.WARNING, logger="data"):
        skipping = consumers(path, tiny_model, tokenizer, tmp_path, skip=True)
    kept = len(squad_file.read(path, skip_invalid=True, quiet=True).questions)
    assert set(skipping.values()) == {kept}, skipping
    assert f"kept {kept} of" in caplog.text


def test_skips_are_counted_in_questions(tmp_path, caplog):
    """A dropped paragraph counts its questions; the summary says how many of all were kept."""
    d = nested()
    total = sum(len(p["qas"]) for a in d["data"] for p in a["paragraphs"])
    lost = d["data"][0]["paragraphs"][0]
    lost.pop("context")
    others = [qa for a in d["data"] for p in a["paragraphs"] if p is not lost for qa in p["qas"]]
    others[0]["question"] = ""
    others[1]["is_impossible"] = "no"
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(d))
    with caplog.at_level(logging.WARNING, logger="data"):
        records = squad_file.read(str(path), skip_invalid=True)
    n = len(lost["qas"])
    kept = total - n - 2
    assert len(records.questions) == kept and records.skipped_questions == n + 2
    assert (
        f"{path}: skipped 1 paragraph ({n} questions) and 2 questions: kept {kept} of {total} questions"
        in caplog.text
    )
