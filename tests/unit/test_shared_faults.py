"""Faults a shared cluster brings (issue 20): a run reusing an entry built with other settings, a
feature worker killed alone, a cache shared by a group, a full filesystem, debris after kills."""

import json
import os
import signal
import subprocess
import sys
import time

import make_squad_data
import pytest
from conftest import ROOT

import data
import errors

SPEC = data.FeatureSpec(max_seq_length=64, doc_stride=24, max_query_length=16)


def test_entry_built_skipping_records_is_refused_by_a_run_that_would_refuse_them(
    tmp_path, tokenizer
):
    d = make_squad_data.make_dataset(60, 3, 1, "train")
    bad = d["data"][0]["paragraphs"][0]["qas"][0]
    bad["question"] = ""
    path = tmp_path / "train.json"
    path.write_text(json.dumps(d))
    cache_dir = str(tmp_path / "cache")
    built, status = data.load_or_build_features(
        str(path), tokenizer, SPEC, "train", cache_dir, skip_invalid=True
    )
    assert status == "built" and built.manifest["skipped_examples"] == 1
    with pytest.raises(
        errors.DataError, match=f"question '{bad['id']}': empty or missing question"
    ):
        data.load_or_build_features(str(path), tokenizer, SPEC, "train", cache_dir)
    # The run that skips gets the entry it built, without tokenizing again.
    again, status = data.load_or_build_features(
        str(path), tokenizer, SPEC, "train", cache_dir, skip_invalid=True
    )
    assert status == "loaded" and len(again) == len(built)


def test_feature_worker_killed_alone_ends_the_build_with_the_cause(tmp_path, tiny_model):
    """SIGKILL to one feature worker (what the OOM killer does): the build ends within a bounded
    time with an error naming memory and --workers; nothing is published."""
    big = tmp_path / "big.json"
    big.write_text(json.dumps(make_squad_data.make_dataset(3000, 7, 1, "train")))
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "data": {
                    "train_file": str(big),
                    "validation_file": str(big),
                    "use_bind_mount": False,
                    "cache_dir": str(tmp_path / "cache"),
                },
                "hyperparameters": {
                    "pretrained_model_name": tiny_model,
                    "max_seq_length": 64,
                    "doc_stride": 24,
                    "max_query_length": 16,
                    "global_batch_size": 8,
                },
            }
        )
    )
    p = subprocess.Popen(
        [sys.executable, "data.py", "prepare", "--config", str(config), "--workers", "2"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        line = p.stderr.readline()
        assert line, "prepare ended before building"
        if "building train features" in line:
            break
    cmdline = open(f"/proc/{p.pid}/cmdline").read()
    workers = []
    while not workers and time.time() < deadline:  # the workers have the parent's command line
        children = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
        workers = [c for c in children if open(f"/proc/{c}/cmdline").read() == cmdline]
    os.kill(int(workers[0]), signal.SIGKILL)
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail("the build still ran 60 s after one of its workers was killed")
    assert p.returncode == 1, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "memory" in last and "--workers" in last, last
    features = tmp_path / "cache" / "features"
    assert [n for n in os.listdir(features) if not n.endswith(".lock")] == []


def test_do_lower_case_is_applied_on_both_stacks(tiny_model):
    """transformers 4.57 ignores do_lower_case for a tokenizer.json (5.x applies it); the project
    applies it itself, so a cased run tokenizes cased on either stack."""
    import models

    text = "Kesel NORTAVEZ founded Vorbelor"
    lower = models.load_tokenizer(tiny_model, True)
    cased = models.load_tokenizer(tiny_model, False)
    assert lower.tokenize(text) == lower.tokenize(text.lower())
    assert cased.tokenize(text) != cased.tokenize(text.lower())
    assert "".join(cased.tokenize(text)).replace("\u2581", "") == text.replace(" ", "")
