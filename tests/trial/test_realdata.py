"""Real text: unmodified SQuAD 2.0 excerpts (../shared/realdata, README there; never copied into
the repository). Real paragraph lengths, real answer positions, real unanswerable questions, through
audit, training with validation, the official metrics, predict.py, the exported pipeline, and every
input layout. CI sets REALDATA_REQUIRED=1 (.ci/run), so a missing folder fails there; a clone
without it skips with a message. REALDATA_DIR points elsewhere."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT
from squad_layouts import flat_records, write_parquet
from trial_runs import checkpoints, run

import data
import squad_file

REALDATA = os.environ.get("REALDATA_DIR") or os.path.join(ROOT, "..", "shared", "realdata")
TRAIN = os.path.join(REALDATA, "train-v2.0-excerpt.json")
DEV = os.path.join(REALDATA, "dev-v2.0-excerpt.json")
SHA256 = {  # the folder's README: the excerpts as published
    TRAIN: "53e67dd96e8597a8ef600e795d54d3fdef18486d42721884d38d652e2a2638cb",
    DEV: "43c3b5b34f6453b1805f4e4618339c4f908b456815415246122bc965618e2528",
}
# The run: windows small enough that real paragraphs (a median 447 tiny-tokenizer tokens in the
# dev article) need several each, questions few enough to stay within a minute or so.
HP = {"max_seq_length": 192, "doc_stride": 64, "max_query_length": 32}
SPEC = data.FeatureSpec(max_seq_length=384, doc_stride=128, max_query_length=64)  # the cluster's

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module", autouse=True)
def realdata():
    missing = [p for p in (TRAIN, DEV) if not os.path.isfile(p)]
    if missing:
        message = f"real SQuAD excerpts not found ({', '.join(missing)}); see tests/trial/test_realdata.py"
        if os.environ.get("REALDATA_REQUIRED") == "1":
            pytest.fail(message + " (REALDATA_REQUIRED=1)")
        pytest.skip(message)
    for path, digest in SHA256.items():
        with open(path, "rb") as f:
            assert (
                hashlib.sha256(f.read()).hexdigest() == digest
            ), f"{path} is not the published excerpt"


def test_real_text_tokenizes_with_offsets_that_hold(tokenizer):
    """The tiny tokenizer was trained on generated text: real text gets some unknown tokens, but
    every token's offsets must cut real characters of the context, in order."""
    records = squad_file.read(DEV)
    tokens = unknown = 0
    for context in records.contexts:
        enc = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
        tokens += len(enc["input_ids"])
        unknown += enc["input_ids"].count(tokenizer.unk_token_id)
        ends = [e for _, e in enc["offset_mapping"]]
        assert ends == sorted(ends)
        for s, e in enc["offset_mapping"]:
            assert 0 <= s < e <= len(context) and context[s:e].strip(), (context[s:e], s, e)
    assert unknown / tokens < 0.03, (unknown, tokens)  # 1.6% measured: accents, symbols


def test_audit_recovers_the_real_answers(tokenizer):
    report = data.audit(TRAIN, tokenizer, SPEC)
    assert report["examples"] == 4719 and report["answerable"] == 4371
    assert report["recovered"] / report["answerable"] >= 0.995, report["unrecovered"][:10]
    assert report["labels_start_after_end"] == [] and report["labels_empty_span"] == []


def test_every_layout_of_the_real_train_file_gives_identical_features(tmp_path, tokenizer):
    with open(TRAIN) as f:
        records = flat_records(json.load(f))
    paths = {"flat JSON": tmp_path / "flat.json", "flat JSON lines": tmp_path / "flat.jsonl"}
    paths["flat JSON"].write_text(json.dumps(records))
    paths["flat JSON lines"].write_text("".join(json.dumps(r) + "\n" for r in records))
    paths["flat parquet"] = tmp_path / "flat.parquet"
    write_parquet(records, paths["flat parquet"])
    nested = data.read_squad(TRAIN, "train")
    built = data.featurize(nested, tokenizer, SPEC, training=True)
    for layout, path in paths.items():
        assert squad_file.read(str(path), "train").layout == layout
        got = data.featurize(data.read_squad(str(path), "train"), tokenizer, SPEC, training=True)
        for key in built:
            assert got[key].tobytes() == built[key].tobytes(), (layout, key)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    """One short run on real text, validated on the first 150 questions of the real dev article
    given as parquet (the time goes to validation: each paragraph needs several windows). About a
    minute on 2 cores when they are free: the one training run of this suite, shared below."""
    tmp = tmp_path_factory.mktemp("realdata")
    with open(DEV) as f:
        dev_parquet = tmp / "dev.parquet"
        write_parquet(flat_records(json.load(f))[:DEV_QUESTIONS], dev_parquet)
    with open(os.path.join(ROOT, "configs", "local_tiny.yaml")) as f:
        config = yaml.safe_load(f)
    config["data"].update(
        train_file=TRAIN,
        validation_file=str(dev_parquet),
        cache_dir=str(tmp / "cache"),
        max_train_examples=400,
    )
    config["hyperparameters"].update(
        pretrained_model_name=tiny_model,
        global_batch_size=16,
        max_batches=8,
        reporting_period_batches=4,
        **HP,
    )
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    metrics, log = run(["--config", str(tmp / "config.yaml")], tmp / "out")
    (checkpoint,) = checkpoints(tmp / "out")[8]
    return metrics, checkpoint, tmp


def cli(*args):
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    try:  # squad_eval.py prints indented JSON, the others one line last
        return json.loads(proc.stdout)
    except ValueError:
        return json.loads(proc.stdout.strip().splitlines()[-1])


DEV_QUESTIONS = 150
# Not best_*: the trial searches the best threshold over each question's best non-null span
# (span_preds), which predictions.json, holding the thresholded answers, cannot give the script.
KEYS = ("exact", "f1", "total", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1")


def test_run_metrics_equal_the_official_scripts(trained):
    metrics, _, tmp = trained
    assert metrics["total"] == DEV_QUESTIONS
    predictions = tmp / "out" / "predictions" / "batch_8"
    official = cli(
        os.path.join(ROOT, "squad_eval.py"),
        str(tmp / "dev.parquet"),
        str(predictions / "predictions.json"),
        "-n",
        str(predictions / "null_odds.json"),
        "-t",
        "0.0",
    )
    # The trial thresholds null odds itself (predictions.json holds its choices): any -t agrees.
    assert {k: official[k] for k in KEYS} == pytest.approx({k: metrics[k] for k in KEYS})


def test_predict_file_on_the_real_dev_article(trained, tmp_path):
    _, checkpoint, tmp = trained
    with open(DEV) as f:
        lines = tmp_path / "dev.jsonl"
        kept = flat_records(json.load(f))[:60]  # 60 questions: predict.py's reading and scoring
        lines.write_text("".join(json.dumps(r) + "\n" for r in kept))
    got = cli(
        os.path.join(ROOT, "predict.py"),
        checkpoint,
        "--file",
        str(lines),
        "--out",
        str(tmp_path / "o"),
    )
    assert got["total"] == 60
    official = cli(
        os.path.join(ROOT, "squad_eval.py"), str(lines), str(tmp_path / "o" / "predictions.json")
    )
    assert {k: official[k] for k in ("exact", "f1")} == pytest.approx(
        {k: got[k] for k in ("exact", "f1")}
    )


PIPELINE = """
import json, sys
from transformers import pipeline
qa = pipeline("question-answering", model=sys.argv[1], trust_remote_code=True)
print(json.dumps(qa(question=sys.argv[2], context=sys.argv[3], null_score_diff_threshold=1e9)))
"""


def test_exported_pipeline_and_predict_agree_on_long_real_contexts(trained, tokenizer, tmp_path):
    _, checkpoint, _ = trained
    exported = tmp_path / "exported"
    cli(os.path.join(ROOT, "export.py"), checkpoint, str(exported))
    records = squad_file.read(DEV)
    window = HP["max_seq_length"] - HP["max_query_length"] - 3
    long = [
        q
        for q in records.questions
        if len(tokenizer(records.contexts[q["context"]], add_special_tokens=False)["input_ids"])
        > 2 * window
    ][:1]
    assert long
    for q in long:
        context = records.contexts[q["context"]]
        ours = cli(
            os.path.join(ROOT, "predict.py"),
            str(exported),
            "--question",
            q["question"],
            "--context",
            context,
            "--threshold",
            "1e9",
        )
        proc = subprocess.run(
            [sys.executable, "-c", PIPELINE, str(exported), q["question"], context],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env={
                **os.environ,
                "HF_MODULES_CACHE": str(tmp_path / "modules"),
                "HF_HUB_OFFLINE": "1",
            },
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        theirs = json.loads(proc.stdout.strip().splitlines()[-1])
        assert ours["answer"] and theirs["answer"] == ours["answer"], (ours, theirs)
        assert context[theirs["start"] : theirs["end"]] == theirs["answer"]
