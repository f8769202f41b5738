"""Checkpoint → Hugging Face directory → pipeline / predict.py, and evaluation-only runs that
reproduce the trial's own validation metrics."""
import json
import os
import shutil
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


PIPELINE_SCRIPT = """
import json, sys
from transformers import pipeline
qa = pipeline("question-answering", model=sys.argv[1], trust_remote_code=True)
q = dict(question=sys.argv[2], context=sys.argv[3])
print(json.dumps({"one": qa(**q), "top3": qa(**q, top_k=3), "listed": qa([q, q]),
                  "no_answer": qa(**q, null_score_diff_threshold=-1e9),
                  "span": qa(**q, null_score_diff_threshold=1e9), "class": type(qa).__name__}))
"""
QUESTION = ("Who founded Vorbelor?", "Vorbelor was founded by Kesel Nortavez in 1774.")


def pipeline_answers(model_dir, workdir):
    """PIPELINE_SCRIPT's answers to QUESTION, from an application outside this project (another
    directory, its own modules cache, offline)."""
    env = {**os.environ, "HF_MODULES_CACHE": str(workdir / "modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT, model_dir, *QUESTION], capture_output=True,
                          text=True, timeout=300, cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # transformers 4 has a "question-answering" task of its own: the directory's must replace it.
    assert got["class"] == "SquadQAPipeline"
    span = got["span"]
    assert span["answer"] and QUESTION[1][span["start"]:span["end"]] == span["answer"]
    return got


LOADER_SCRIPT = """
import json, sys, torch
from determined import pytorch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer
trial = pytorch.load_trial_from_checkpoint_path(sys.argv[1])
exported = AutoModelForQuestionAnswering.from_pretrained(sys.argv[2]).eval()
batch = AutoTokenizer.from_pretrained(sys.argv[2])([sys.argv[3]], [sys.argv[4]], return_tensors="pt")
with torch.no_grad():
    a, b = trial.model(**batch), exported(**batch)
print(json.dumps({"class": type(trial).__module__ + ":" + type(trial).__name__,
                  "diff": max((a.start_logits - b.start_logits).abs().max().item(),
                              (a.end_logits - b.end_logits).abs().max().item())}))
"""


def assert_loader_matches_export(checkpoint, workdir):
    """determined.pytorch.load_trial_from_checkpoint_path rebuilds the trial from a copy of the
    checkpoint in a fresh process, offline, with the data files, the feature cache and the starting
    model all gone, and its model gives the exported model's logits."""
    workdir.mkdir()
    copy = shutil.copytree(checkpoint, workdir / "checkpoint")
    gone = workdir / "gone"  # where the data, cache and model now "are": nothing may appear there
    load_data = json.loads((copy / "load_data.json").read_text())
    load_data["experiment_config"]["data"].update(train_file=str(gone / "train.json"),
                                                  validation_file=str(gone / "dev.json"), cache_dir=str(gone / "cache"))
    load_data["hparams"]["pretrained_model_name"] = str(gone / "model")
    (copy / "load_data.json").write_text(json.dumps(load_data))
    exported = workdir / "exported"
    cli(os.path.join(ROOT, "export.py"), checkpoint, str(exported))
    proc = subprocess.run([sys.executable, "-c", LOADER_SCRIPT, str(copy), str(exported), *QUESTION],
                          capture_output=True, text=True, timeout=300, cwd=workdir,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["class"] == "model_def:SquadTrial" and got["diff"] < 1e-5, got
    assert not gone.exists()


def test_export_loads_in_the_question_answering_pipeline(trained, tmp_path):
    """An application outside this project (another directory, its own modules cache) loads the
    export with transformers.pipeline and gets predict.py's answer."""
    from transformers import AutoModelForQuestionAnswering

    _, checkpoint, tmp = trained
    out = tmp / "exported"
    assert cli(os.path.join(ROOT, "export.py"), checkpoint, str(out))["exported"] == str(out)
    assert (out / "model.safetensors").is_file() and (out / "qa_pipeline.py").is_file()
    results = {name: pipeline_answers(model_dir, tmp_path)
               for name, model_dir in (("export", str(out)), ("checkpoint", os.path.join(checkpoint, "hf")))}
    # export_hf_model (on in the local configs) puts the same loadable copy in every checkpoint.
    assert results["export"] == results["checkpoint"]
    got = results["export"]
    for key, threshold in (("one", "0"), ("span", "1e9")):  # the model's threshold; one that forces a span
        expected = cli(os.path.join(ROOT, "predict.py"), str(out), "--question", QUESTION[0], "--context", QUESTION[1],
                       "--threshold", threshold)
        assert got[key]["answer"] == expected["answer"]
    assert got["listed"] == [got["one"], got["one"]]
    assert len(got["top3"]) == 3 and got["top3"][0]["score"] >= got["top3"][1]["score"] >= got["top3"][2]["score"]
    assert got["no_answer"] == {"answer": "", "score": got["no_answer"]["score"], "start": 0, "end": 0}
    assert AutoModelForQuestionAnswering.from_pretrained(str(out)).config.squad_settings["max_seq_length"] == 128


def test_predict_from_checkpoint_or_export_agree(trained):
    _, checkpoint, tmp = trained
    exported = tmp / "exported2"
    cli(os.path.join(ROOT, "export.py"), checkpoint, str(exported))
    question = ["--question", QUESTION[0], "--context", QUESTION[1], "--nbest", "3"]
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


def test_determined_loader_rebuilds_the_trial_offline(trained, tmp_path):
    assert_loader_matches_export(trained[1], tmp_path / "loader")
