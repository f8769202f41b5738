"""Feature labels: every answerable question's gold answer is recovered from its labeled token span
via offsets, unanswerable or out-of-window questions are labeled CLS, and the cache is reused."""

import json

import numpy as np
import pytest

import data
import errors

SPEC = data.FeatureSpec(
    max_seq_length=64, doc_stride=24, max_query_length=16
)  # forces several windows


def test_labels_recover_gold_answers(squad_files, tokenizer):
    examples = data.read_squad(squad_files[0], "train")
    train = data.featurize(examples, tokenizer, SPEC, training=True)
    # Validation features of the same examples have the same windows, in the same order, with offsets.
    offsets = data.featurize(examples, tokenizer, SPEC, training=False)["offsets"]
    assert (
        len(offsets) == len(train["input_ids"]) > len(examples)
    )  # some contexts span several windows
    labeled = set()
    for f, e in enumerate(train["example_index"]):
        start, end = train["start_positions"][f], train["end_positions"][f]
        if examples.is_impossible[e]:
            assert start == end == 0
            continue
        if start == 0:
            assert end == 0
            continue
        context = examples.contexts[examples.context_index[e]]
        assert context[offsets[f, start, 0] : offsets[f, end, 1]] == examples.answer_text[e]
        labeled.add(e)
    answerable = {e for e in range(len(examples)) if not examples.is_impossible[e]}
    assert labeled == answerable  # every short answer fits in some window of 40 context tokens


def test_answer_outside_every_window_is_cls(tokenizer):
    context = " ".join(["filler words here"] * 40) + " The founder was Kalo Mira."
    examples = data.Examples(
        ["q"],
        ["Who was the founder?"],
        [context],
        [0],
        [context.index("Kalo")],
        ["Kalo Mira"],
        [False],
    )
    tight = data.FeatureSpec(max_seq_length=24, doc_stride=4, max_query_length=8)
    f = data.featurize(examples, tokenizer, tight, training=True)
    offsets = data.featurize(examples, tokenizer, tight, training=False)["offsets"]
    hits = [i for i in range(len(f["input_ids"])) if f["start_positions"][i] > 0]
    assert hits and len(hits) < len(
        f["input_ids"]
    )  # the answer's windows are labeled, the rest are CLS
    i = hits[0]
    assert (
        context[offsets[i, f["start_positions"][i], 0] : offsets[i, f["end_positions"][i], 1]]
        == "Kalo Mira"
    )


def test_question_truncated_to_max_query_length(tokenizer):
    question = "Who " + "really " * 50 + "founded it?"
    examples = data.Examples(
        ["q"], [question], ["It was founded by Kalo."], [0], [18], ["Kalo"], [False]
    )
    f = data.featurize(examples, tokenizer, data.FeatureSpec(64, 16, 8), training=True)
    question_tokens = int(np.flatnonzero(f["input_ids"][0] == tokenizer.sep_token_id)[0]) - 1
    assert question_tokens == 8
    assert f["start_positions"][0] > 0


def test_validation_offsets_only_on_context_tokens(squad_files, tokenizer):
    examples = data.read_squad(squad_files[1], "validation")
    f = data.featurize(examples, tokenizer, SPEC, training=False)
    tt = f["token_type_ids"].astype(bool)
    has_offset = f["offsets"][:, :, 0] >= 0
    # Context tokens are exactly the type-1 tokens except the final [SEP].
    for i in range(len(tt)):
        n = f["lengths"][i]
        assert has_offset[i, :n].sum() == tt[i, :n].sum() - 1
        assert not has_offset[i, n:].any()


def test_cache_built_once_then_loaded_and_keyed_on_settings(squad_files, tokenizer, tmp_path):
    f1, status1 = data.load_or_build_features(
        squad_files[1], tokenizer, SPEC, "validation", str(tmp_path)
    )
    f2, status2 = data.load_or_build_features(
        squad_files[1], tokenizer, SPEC, "validation", str(tmp_path)
    )
    assert (status1, status2) == ("built", "loaded")
    for k in f1.arrays:
        np.testing.assert_array_equal(f1.arrays[k], f2.arrays[k])
    assert f2.example_ids == f1.example_ids and len(f2.example_contexts) == len(f2.example_ids)
    other = data.FeatureSpec(64, 16, 16)
    _, status3 = data.load_or_build_features(
        squad_files[1], tokenizer, other, "validation", str(tmp_path)
    )
    assert status3 == "built"


def test_corrupt_cache_entry_is_rebuilt(squad_files, tokenizer, tmp_path):
    f1, _ = data.load_or_build_features(
        squad_files[1], tokenizer, SPEC, "validation", str(tmp_path)
    )
    expected = np.array(f1.arrays["input_ids"])  # a copy: the loaded arrays map the file we corrupt
    entry = tmp_path / "features" / f1.manifest["key"]
    path = entry / "input_ids.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    f2, status = data.load_or_build_features(
        squad_files[1], tokenizer, SPEC, "validation", str(tmp_path)
    )
    assert status == "built"
    np.testing.assert_array_equal(expected, f2.arrays["input_ids"])
    assert list(tmp_path.joinpath("features").glob("*.corrupt-*"))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda qa, p: qa.update(answers=[{"text": "nowhere", "answer_start": 0}]),
            "does not point at the answer",
        ),
        (lambda qa, p: qa.update(question="  "), "empty or missing question"),
        (lambda qa, p: qa.pop("id"), "missing question id"),
        (lambda qa, p: p["qas"].append(dict(qa)), "duplicate question id"),
    ],
)
def test_bad_records_name_file_and_question(squad_files, tmp_path, mutate, message):
    dataset = json.loads(open(squad_files[0]).read())
    paragraph = dataset["data"][0]["paragraphs"][0]
    qa = next(q for q in paragraph["qas"] if q["answers"])
    mutate(qa, paragraph)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dataset))
    with pytest.raises(errors.DataError, match=message) as err:
        data.read_squad(str(bad), "train")
    assert str(bad) in str(err.value)
    kept = data.read_squad(str(bad), "train", skip_invalid=True)
    assert kept.skipped == 1


def test_malformed_json_and_bad_utf8(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [')
    with pytest.raises(errors.DataError, match="malformed JSON at line 1"):
        data.read_squad(str(broken), "train")
    broken.write_bytes(b'{"data": ["\xff"]}')
    with pytest.raises(errors.DataError, match="not valid UTF-8"):
        data.read_squad(str(broken), "train")
