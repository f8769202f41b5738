"""Checkpoint → Hugging Face directory → pipeline / predict.py, and evaluation-only runs that
reproduce the trial's own validation metrics."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from test_trial import checkpoints, run, write_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, squad_files, tiny_model):
    tmp = tmp_path_factory.mktemp("trained")
    metrics, _ = run(["--config", write_config(tmp, squad_files, tiny_model, max_batches=30, learning_rate=2e-3)],
                     tmp / "out")
    (checkpoint,) = checkpoints(tmp / "out")[30]
    return metrics, checkpoint, tmp


def cli(*args):
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_export_loads_with_the_auto_classes(trained):
    """transformers 5 removed the "question-answering" pipeline task (pipeline() raises KeyError),
    so the exported directory is checked the way it is used now: the Auto classes load it, and its
    answers are the checkpoint's."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    import predict

    _, checkpoint, tmp = trained
    out = tmp / "exported"
    assert cli(os.path.join(ROOT, "export.py"), checkpoint, str(out))["exported"] == str(out)
    assert (out / "model.safetensors").is_file() and (out / "squad_settings.json").is_file()
    model = AutoModelForQuestionAnswering.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    inputs = tokenizer("Who founded Vorbelor?", "Vorbelor was founded by Kesel Nortavez in 1774.", return_tensors="pt")
    assert model(**inputs).start_logits.shape == inputs["input_ids"].shape
    # export_hf_model (on in the local configs) puts the same loadable copy in every checkpoint.
    in_checkpoint = AutoModelForQuestionAnswering.from_pretrained(os.path.join(checkpoint, "hf"))
    for (name, a), (_, b) in zip(model.state_dict().items(), in_checkpoint.state_dict().items()):
        assert (a == b).all(), name
    assert predict.load(str(out))[2]["max_seq_length"] == 128  # the settings it was trained with


def test_predict_from_checkpoint_or_export_agree(trained):
    _, checkpoint, tmp = trained
    exported = tmp / "exported2"
    cli(os.path.join(ROOT, "export.py"), checkpoint, str(exported))
    question = ["--question", "Who founded Vorbelor?", "--context", "Vorbelor was founded by Kesel Nortavez in 1774.",
                "--nbest", "3"]
    a = cli(os.path.join(ROOT, "predict.py"), checkpoint, *question)
    b = cli(os.path.join(ROOT, "predict.py"), str(exported), *question)
    assert a == b
    assert set(a) >= {"answer", "no_answer", "score", "null_score_diff", "nbest"} and len(a["nbest"]) == 3
    assert a["no_answer"] == (a["answer"] == "") and a["no_answer"] == (a["null_score_diff"] > a["threshold"])


def test_evaluation_only_run_reproduces_trial_metrics(trained, squad_files):
    metrics, checkpoint, tmp = trained
    out = tmp / "eval"
    again = cli(os.path.join(ROOT, "predict.py"), checkpoint, "--file", squad_files[1], "--out", str(out))
    for name in ("predictions.json", "nbest_predictions.json", "null_odds.json", "metrics.json"):
        assert (out / name).is_file()
    assert json.loads((out / "metrics.json").read_text()) == again
    for key in ("exact", "f1", "HasAns_f1", "NoAns_f1", "total"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key
    trial_predictions = json.loads(open(os.path.join(checkpoint, "predictions", "predictions.json")).read())
    assert json.loads((out / "predictions.json").read_text()) == trial_predictions
