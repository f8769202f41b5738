"""Checkpoint → Hugging Face directory → pipeline / predict.py, and evaluation-only runs that
reproduce the trial's own validation metrics."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT
from trial_runs import checkpoints, run, write_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, squad_files, tiny_model):
    tmp = tmp_path_factory.mktemp("trained")
    metrics, _ = run(
        [
            "--config",
            write_config(tmp, squad_files, tiny_model, max_batches=30, learning_rate=2e-3),
        ],
        tmp / "out",
    )
    (checkpoint,) = checkpoints(tmp / "out")[30]
    return metrics, checkpoint, tmp


def cli(*args):
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


PIPELINE_SCRIPT = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
from transformers import pipeline
qa = pipeline("question-answering", model=sys.argv[1], trust_remote_code=True)
q = dict(question=sys.argv[2], context=sys.argv[3])
# 8 threads sharing one pipeline answer exactly as one by one: a few contexts asked about again
# and again (the context-token cache is shared), long enough for several windows.
contexts = [sys.argv[3], "Kesel Nortavez built a mill near Vorbelor in 1790. " * 12,
            "The river Ostra runs past the mill. " * 20]
asks = [dict(question=question, context=c) for question in (sys.argv[2], "When was the mill built?",
        "What runs past the mill?") for c in contexts] * 4
one_by_one = [qa(**a, top_k=2) for a in asks]
with ThreadPoolExecutor(8) as pool:
    threaded = list(pool.map(lambda a: qa(**a, top_k=2), asks))
print(json.dumps({"one": qa(**q), "top3": qa(**q, top_k=3), "listed": qa([q, q]),
                  "no_answer": qa(**q, null_score_diff_threshold=-1e9),
                  "span": qa(**q, null_score_diff_threshold=1e9), "class": type(qa).__name__,
                  "threads_same": threaded == one_by_one, "asks": len(asks)}))
"""
QUESTION = ("Who founded Vorbelor?", "Vorbelor was founded by Kesel Nortavez in 1774.")


def pipeline_answers(model_dir, workdir):
    """PIPELINE_SCRIPT's answers to QUESTION, from an application outside this project (another
    directory, its own modules cache, offline)."""
    env = {**os.environ, "HF_MODULES_CACHE": str(workdir / "modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", PIPELINE_SCRIPT, model_dir, *QUESTION],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=workdir,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # transformers 4 has a "question-answering" task of its own: the directory's must replace it.
    assert got["class"] == "SquadQAPipeline"
    assert got["threads_same"] and got["asks"] == 36
    span = got["span"]
    assert span["answer"] and QUESTION[1][span["start"] : span["end"]] == span["answer"]
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
    load_data["experiment_config"]["data"].update(
        train_file=str(gone / "train.json"),
        validation_file=str(gone / "dev.json"),
        cache_dir=str(gone / "cache"),
    )
    load_data["hparams"]["pretrained_model_name"] = str(gone / "model")
    (copy / "load_data.json").write_text(json.dumps(load_data))
    exported = workdir / "exported"
    cli(os.path.join(ROOT, "export.py"), checkpoint, str(exported))
    proc = subprocess.run(
        [sys.executable, "-c", LOADER_SCRIPT, str(copy), str(exported), *QUESTION],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=workdir,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
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
    results = {
        name: pipeline_answers(model_dir, tmp_path)
        for name, model_dir in (
            ("export", str(out)),
            ("checkpoint", os.path.join(checkpoint, "hf")),
        )
    }
    # export_hf_model (on in the local configs) puts the same loadable copy in every checkpoint.
    assert results["export"] == results["checkpoint"]
    got = results["export"]
    for key, threshold in (
        ("one", []),
        ("span", ["--threshold", "1e9"]),
    ):  # the model's threshold; one forcing a span
        expected = cli(
            os.path.join(ROOT, "predict.py"),
            str(out),
            "--question",
            QUESTION[0],
            "--context",
            QUESTION[1],
            *threshold,
        )
        assert got[key]["answer"] == expected["answer"]
    assert got["listed"] == [got["one"], got["one"]]
    assert (
        len(got["top3"]) == 3
        and got["top3"][0]["score"] >= got["top3"][1]["score"] >= got["top3"][2]["score"]
    )
    assert got["no_answer"] == {
        "answer": "",
        "score": got["no_answer"]["score"],
        "start": 0,
        "end": 0,
    }
    assert (
        AutoModelForQuestionAnswering.from_pretrained(str(out)).config.squad_settings[
            "max_seq_length"
        ]
        == 128
    )


def test_predict_from_checkpoint_or_export_agree(trained):
    _, checkpoint, tmp = trained
    exported = tmp / "exported2"
    cli(os.path.join(ROOT, "export.py"), checkpoint, str(exported))
    question = ["--question", QUESTION[0], "--context", QUESTION[1], "--nbest", "3"]
    a = cli(os.path.join(ROOT, "predict.py"), checkpoint, *question)
    b = cli(os.path.join(ROOT, "predict.py"), str(exported), *question)
    assert a == b
    assert (
        set(a) >= {"answer", "no_answer", "score", "null_score_diff", "nbest"}
        and len(a["nbest"]) == 3
    )
    assert a["no_answer"] == (a["answer"] == "") and a["no_answer"] == (
        a["null_score_diff"] > a["threshold"]
    )


def test_evaluation_only_run_reproduces_trial_metrics(trained, squad_files):
    """At the config's threshold (0) an evaluation-only run gives the trial's own metrics and answers;
    by default it uses the threshold tuned on that validation, which scores its best_f1."""
    metrics, checkpoint, tmp = trained
    out = tmp / "eval"
    again = cli(
        os.path.join(ROOT, "predict.py"),
        checkpoint,
        "--file",
        squad_files[1],
        "--out",
        str(out),
        "--threshold",
        "0",
    )
    for name in ("predictions.json", "nbest_predictions.json", "null_odds.json", "metrics.json"):
        assert (out / name).is_file()
    assert json.loads((out / "metrics.json").read_text()) == again
    for key in ("exact", "f1", "HasAns_f1", "NoAns_f1", "total"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key
    trial_predictions = json.loads(
        open(os.path.join(checkpoint, "predictions", "predictions.json")).read()
    )
    assert json.loads((out / "predictions.json").read_text()) == trial_predictions
    tuned = cli(os.path.join(ROOT, "predict.py"), checkpoint, "--file", squad_files[1])
    assert (
        tuned["f1"] == pytest.approx(metrics["best_f1"], abs=1e-6) and tuned["f1"] >= metrics["f1"]
    )


def test_exported_models_carry_the_threshold_tuned_on_validation(trained, tmp_path):
    """export.py (and every checkpoint's hf/) carry best_f1_thresh of the checkpoint's validation and
    say so; --threshold config or a number overrides it."""
    metrics, checkpoint, _ = trained
    from transformers import AutoConfig

    carried = AutoConfig.from_pretrained(os.path.join(checkpoint, "hf")).squad_settings
    assert carried["null_score_diff_threshold"] == pytest.approx(metrics["best_f1_thresh"])
    assert carried["null_score_diff_threshold_source"].startswith(
        "tuned on the validation after batch 30"
    )
    for choice, value, source in (
        (None, metrics["best_f1_thresh"], "tuned"),
        ("config", 0.0, "the config's"),
        ("-1.5", -1.5, "given when exported"),
    ):
        out = tmp_path / f"export-{choice}"
        report = cli(
            os.path.join(ROOT, "export.py"),
            checkpoint,
            str(out),
            *(["--threshold", choice] if choice else []),
        )
        assert report["null_score_diff_threshold"] == pytest.approx(value)
        assert report["null_score_diff_threshold_source"].startswith(source)
        written = json.loads((out / "config.json").read_text())["squad_settings"]
        assert written["null_score_diff_threshold"] == pytest.approx(value)


def test_determined_loader_rebuilds_the_trial_offline(trained, tmp_path):
    assert_loader_matches_export(trained[1], tmp_path / "loader")


def fail(*args, cwd=ROOT):
    """A command that must fail cleanly: (exit code, its one stderr line)."""
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines and lines[-1].startswith("error: ") and not proc.stdout.strip(), proc.stderr[
        -3000:
    ]
    return proc.returncode, lines[-1]


@pytest.fixture(scope="module")
def broken(trained, tmp_path_factory):
    """Damaged copies of a checkpoint and an export, and a file and a directory that must survive."""
    _, checkpoint, tmp = trained
    root = tmp_path_factory.mktemp("broken")
    exported = root / "exported"
    cli(os.path.join(ROOT, "export.py"), checkpoint, str(exported))
    made = {"checkpoint": checkpoint, "exported": str(exported)}
    for name, remove, garble in (
        ("no_weights", "model.safetensors", None),
        ("bad_config", None, "config.json"),
        ("no_tokenizer", "tokenizer.json", None),
    ):
        copy = shutil.copytree(exported, root / name)
        if remove:
            os.remove(copy / remove)
            if name == "no_tokenizer":
                os.remove(copy / "tokenizer_config.json")
        if garble:
            (copy / garble).write_text("{not json")
        made[name] = str(copy)
    for name, remove, garble in (
        ("ck_no_state", "state_dict.pth", None),
        ("ck_bad_state", None, "state_dict.pth"),
        ("ck_no_load_data", "load_data.json", None),
    ):
        copy = shutil.copytree(checkpoint, root / name)
        if remove:
            os.remove(copy / remove)
        if garble:
            (copy / garble).write_bytes(b"\x00garbage")
        made[name] = str(copy)
    (root / "keep.txt").write_text("precious")
    (root / "keep_dir").mkdir()
    (root / "keep_dir" / "notes.txt").write_text("precious")
    (root / "not_squad.json").write_text("[1, 2]")
    made.update(
        keep_file=str(root / "keep.txt"),
        keep_dir=str(root / "keep_dir"),
        not_squad=str(root / "not_squad.json"),
        root=str(root),
    )
    return made


Q = ["--question", QUESTION[0], "--context", QUESTION[1]]
PREDICT_CASES = [
    ("missing model dir", ["/nonexistent/model", *Q], 2, "no such model directory"),
    ("model without weights", ["{no_weights}", *Q], 1, "cannot load the model"),
    ("model config not json", ["{bad_config}", *Q], 1, "config.json"),
    ("model without tokenizer", ["{no_tokenizer}", *Q], 1, "no usable tokenizer"),
    ("checkpoint without state", ["{ck_no_state}", *Q], 1, "cannot load the model"),
    ("checkpoint state garbage", ["{ck_bad_state}", *Q], 1, "not a readable checkpoint"),
    ("checkpoint without load_data", ["{ck_no_load_data}", *Q], 1, "not a readable checkpoint"),
    (
        "empty question",
        ["{exported}", "--question", "", "--context", QUESTION[1]],
        2,
        "--question is empty",
    ),
    (
        "blank context",
        ["{exported}", "--question", QUESTION[0], "--context", "   "],
        2,
        "--context is empty",
    ),
    (
        "question only",
        ["{exported}", "--question", QUESTION[0]],
        2,
        "either --question and --context",
    ),
    (
        "question and file",
        ["{exported}", *Q, "--file", "{not_squad}"],
        2,
        "either --question and --context",
    ),
    ("nothing to answer", ["{exported}"], 2, "either --question and --context"),
    ("negative nbest", ["{exported}", *Q, "--nbest", "-1"], 2, "--nbest -1"),
    ("nbest word", ["{exported}", *Q, "--nbest", "three"], 2, "invalid int value"),
    (
        "threshold nan",
        ["{exported}", *Q, "--threshold", "nan"],
        2,
        "--threshold: expected a finite number, got 'nan'",
    ),
    (
        "out is a file",
        ["{exported}", "--file", "{not_squad}", "--out", "{keep_file}"],
        2,
        "exists and is not a directory",
    ),
    (
        "out without file",
        ["{exported}", *Q, "--out", "{root}/new_out"],
        2,
        "--out goes with --file",
    ),
    ("file missing", ["{exported}", "--file", "/nonexistent/dev.json"], 1, "/nonexistent/dev.json"),
    ("file not squad", ["{exported}", "--file", "{not_squad}"], 1, "not_squad.json"),
    ("unknown flag", ["{exported}", *Q, "--top-k", "3"], 2, "unrecognized arguments"),
]


@pytest.mark.parametrize(
    "args, code, expected", [c[1:] for c in PREDICT_CASES], ids=[c[0] for c in PREDICT_CASES]
)
def test_predict_bad_input(broken, args, code, expected):
    before = snapshot(broken["root"])
    got, line = fail(os.path.join(ROOT, "predict.py"), *[a.format(**broken) for a in args])
    assert got == code and expected in line, line
    assert snapshot(broken["root"]) == before  # nothing written, nothing lost


EXPORT_CASES = [
    ("missing checkpoint", ["/nonexistent/ckpt", "{root}/out1"], 2, "no such checkpoint directory"),
    ("export dir given", ["{exported}", "{root}/out2"], 1, "no state_dict.pth"),
    ("state garbage", ["{ck_bad_state}", "{root}/out3"], 1, "not a readable checkpoint"),
    ("no load_data", ["{ck_no_load_data}", "{root}/out4"], 1, "not a readable checkpoint"),
    ("out is a file", ["{checkpoint}", "{keep_file}"], 2, "exists and is not a directory"),
    ("out holds other files", ["{checkpoint}", "{keep_dir}"], 2, "is not an earlier export"),
    ("no out", ["{checkpoint}"], 2, "the following arguments are required: out_dir"),
    (
        "threshold word",
        ["{checkpoint}", "{root}/out5", "--threshold", "fast"],
        2,
        "give tuned, config or a number",
    ),
]


@pytest.mark.parametrize(
    "args, code, expected", [c[1:] for c in EXPORT_CASES], ids=[c[0] for c in EXPORT_CASES]
)
def test_export_bad_input(broken, args, code, expected):
    before = snapshot(broken["root"])
    got, line = fail(os.path.join(ROOT, "export.py"), *[a.format(**broken) for a in args])
    assert got == code and expected in line, line
    assert snapshot(broken["root"]) == before


def test_export_replaces_an_earlier_export(broken):
    again = cli(os.path.join(ROOT, "export.py"), broken["checkpoint"], broken["exported"])
    assert again["exported"] == broken["exported"] and os.path.isfile(
        os.path.join(broken["exported"], "model.safetensors")
    )


def snapshot(root):
    """Every path under root with its size and modification time."""
    return sorted(
        (
            os.path.relpath(os.path.join(d, f), root),
            os.path.getsize(os.path.join(d, f)),
            os.path.getmtime(os.path.join(d, f)),
        )
        for d, _, files in os.walk(root)
        for f in files
    )
