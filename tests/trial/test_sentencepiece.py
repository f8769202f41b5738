"""ALBERT directories that carry only a SentencePiece model (spiece.model and tokenizer_config.json,
no tokenizer.json), as Google's checkpoints and many Hugging Face ALBERT directories do: exact
labels where SentencePiece splits off a bare word-start piece, prepare → train → export →
transformers.pipeline, and a clear error for a directory with no usable tokenizer."""

import json
import os

import pytest
from conftest import ROOT
from test_export_predict import QUESTION, cli, pipeline_answers
from trial_runs import checkpoints, run, write_config

import data
import errors
import models

CONTEXT = "The mark on the gate of Vorbelor is x and the other is é , said Kesel Nortavez in 1774 ."
ANSWERS = ["x", "é", "in", "Kesel Nortavez", "1774", "Vorbelor is x"]


def test_the_directory_has_no_tokenizer_json(sentencepiece_model):
    assert {"spiece.model", "tokenizer_config.json", "config.json"} <= set(
        os.listdir(sentencepiece_model)
    )
    assert "tokenizer.json" not in os.listdir(sentencepiece_model)
    tokenizer = models.load_tokenizer(sentencepiece_model)
    assert tokenizer.is_fast and len(tokenizer) == 1000
    # One-character words come out as a bare word-start piece and the character: the case below.
    ids = tokenizer(" x", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["▁", "x"]


def test_labels_cut_exact_answers_around_bare_word_start_pieces(sentencepiece_model):
    """Each answer's labelled span has start <= end and cuts exactly the answer; no context token's
    offsets start on a space."""
    tokenizer = models.load_tokenizer(sentencepiece_model)
    starts = [CONTEXT.index(f" {a} ") + 1 for a in ANSWERS]
    n = len(ANSWERS)
    examples = data.Examples(
        [str(i) for i in range(n)],
        ["What is it?"] * n,
        [CONTEXT],
        [0] * n,
        starts,
        ANSWERS,
        [False] * n,
    )
    spec = data.FeatureSpec(max_seq_length=96, doc_stride=32, max_query_length=16)
    train = data.featurize(examples, tokenizer, spec, training=True)
    offsets = data.featurize(examples, tokenizer, spec, training=False)["offsets"]
    for f, e in enumerate(train["example_index"]):
        s, t = int(train["start_positions"][f]), int(train["end_positions"][f])
        assert 0 < s <= t, (ANSWERS[e], s, t)
        assert CONTEXT[offsets[f, s, 0] : offsets[f, t, 1]] == ANSWERS[e]
    context_starts = offsets[:, :, 0][offsets[:, :, 0] >= 0]
    assert not any(CONTEXT[i].isspace() for i in context_starts)


def test_prepare_train_export_and_answer_through_the_pipeline(
    sentencepiece_model, squad_files, tmp_path
):
    config = write_config(
        tmp_path, squad_files, sentencepiece_model, max_batches=12, learning_rate=2e-3
    )
    report = cli(os.path.join(ROOT, "data.py"), "prepare", "--config", config)
    assert report["train"]["status"] == report["validation"]["status"] == "built"
    audit = cli(
        os.path.join(ROOT, "data.py"),
        "audit",
        squad_files[0],
        "--model",
        sentencepiece_model,
        "--max-seq-length",
        "128",
        "--doc-stride",
        "32",
    )
    assert audit["recovered"] == audit["answerable"] and audit["unrecovered"] == []
    assert audit["labels_start_after_end"] == audit["labels_empty_span"] == []
    metrics, log = run(["--config", config], tmp_path / "out")
    assert "(loaded, cache key" in log and metrics["total"] == 120
    (checkpoint,) = checkpoints(tmp_path / "out")[12]
    exported = tmp_path / "exported"
    cli(os.path.join(ROOT, "export.py"), checkpoint, str(exported))
    got = pipeline_answers(str(exported), tmp_path)
    expected = cli(
        os.path.join(ROOT, "predict.py"),
        str(exported),
        "--question",
        QUESTION[0],
        "--context",
        QUESTION[1],
    )
    assert got["one"]["answer"] == expected["answer"]


@pytest.mark.parametrize(
    "files",
    [{}, {"spiece.model": b"not a sentencepiece model"}, {"vocab.txt": b"[PAD]\n"}],
    ids=["no tokenizer files", "corrupt spiece.model", "wrong family's vocabulary"],
)
def test_a_directory_without_a_usable_tokenizer_is_named_with_its_files(
    sentencepiece_model, tmp_path, files
):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(
        open(os.path.join(sentencepiece_model, "config.json")).read()
    )
    if files:
        (model_dir / "tokenizer_config.json").write_text(
            json.dumps({"tokenizer_class": "AlbertTokenizer"})
        )
    for name, content in files.items():
        (model_dir / name).write_bytes(content)
    with pytest.raises(errors.DataError) as err:
        models.load_tokenizer(str(model_dir))
    message = str(err.value)
    assert str(model_dir) in message and "config.json" in message and "spiece.model" in message
    assert "tiktoken" not in message.split(")")[-1]


# transformers 4's conversion gives the bare '▁' the space's offsets instead: no end-before-start there.
@pytest.mark.newest_stack
def test_audit_reports_labels_that_end_before_they_start(
    sentencepiece_model, tmp_path, monkeypatch
):
    """Without the offset tidying (Hugging Face run_qa's labelling), an answer ending on a
    one-character word is labelled end < start; data.py audit names those questions."""
    import qa_features

    squad = {
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": CONTEXT,
                        "qas": [
                            {
                                "id": f"q{i}",
                                "question": "What is it?",
                                "answers": [
                                    {"text": a, "answer_start": CONTEXT.index(f" {a} ") + 1}
                                ],
                            }
                            for i, a in enumerate(ANSWERS)
                        ],
                    }
                ],
            }
        ]
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad))
    tokenizer = models.load_tokenizer(sentencepiece_model)
    spec = data.FeatureSpec(max_seq_length=96, doc_stride=32, max_query_length=16)
    assert data.audit(str(path), tokenizer, spec)["labels_start_after_end"] == []
    monkeypatch.setattr(qa_features, "_tidy_context_tokens", lambda *args: None)
    report = data.audit(str(path), tokenizer, spec)
    assert "q0" in report["labels_start_after_end"]  # "x"
