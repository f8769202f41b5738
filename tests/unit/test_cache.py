"""The shared feature cache under concurrency and failure, and the data commands."""

import json
import os
import signal
import subprocess
import sys
import time

import filelock
import numpy as np
from conftest import ROOT

import cache
import data
import errors
import files

SPEC = data.FeatureSpec(max_seq_length=64, doc_stride=24, max_query_length=16)

# A process that loads (or builds) one key and prints its status and a digest of the arrays.
LOADER = """
import hashlib, json, logging, sys
logging.basicConfig(level=logging.INFO)
sys.path.insert(0, {root!r})
import data
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained({model!r})
spec = data.FeatureSpec(64, 24, 16)
f, status = data.load_or_build_features({source!r}, tok, spec, "train", {cache!r}, workers={workers})
digest = hashlib.sha256(b"".join(f.arrays[k].tobytes() for k in sorted(f.arrays))).hexdigest()
print(json.dumps({{"status": status, "digest": digest}}))
"""


def loader(tiny_model, source, cache, workers=1):
    code = LOADER.format(
        root=ROOT, model=tiny_model, source=source, cache=str(cache), workers=workers
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_parallel_workers_build_identical_features(squad_files, tokenizer):
    examples = data.read_squad(squad_files[0], "train")
    one = data.featurize(examples, tokenizer, SPEC, training=True, workers=1, batch_size=64)
    two = data.featurize(examples, tokenizer, SPEC, training=True, workers=2, batch_size=64)
    assert one.keys() == two.keys()
    for k in one:
        np.testing.assert_array_equal(one[k], two[k])


def test_four_processes_racing_build_once(squad_files, tiny_model, tmp_path):
    procs = [loader(tiny_model, squad_files[0], tmp_path) for _ in range(4)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["status"] for r in results) == ["built", "loaded", "loaded", "loaded"]
    assert len({r["digest"] for r in results}) == 1


def test_builder_killed_midway_never_leaves_a_partial_entry(tmp_path, tiny_model, squad_files):
    """kill -9 the builder as it starts building, in the middle of tokenizing, and while it writes
    the entry: nothing partial is ever published, and the next process builds the same features."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import make_squad_data

    big = tmp_path / "big.json"
    big.write_text(
        json.dumps(make_squad_data.make_dataset(3000, 7, 1, "big"))
    )  # 3 batches of 1,000
    cache_dir = tmp_path / "cache"
    reference = loader(tiny_model, str(big), tmp_path / "reference")
    expected = json.loads(reference.communicate(timeout=300)[0].strip().splitlines()[-1])["digest"]
    for marker in ("building train features", "featurized 1000/3000", "featurized 3000/3000"):
        p = loader(tiny_model, str(big), cache_dir, workers=2)
        deadline = time.time() + 120
        while time.time() < deadline:
            line = p.stderr.readline()
            assert line, f"the builder ended before logging {marker!r}"
            if marker in line:
                break
        p.send_signal(signal.SIGKILL)
        p.wait()
        published = [
            d
            for d in os.listdir(cache_dir / "features")
            if not d.startswith(".") and not d.endswith(".lock")
        ]
        for entry in published:  # anything published must be complete and verify
            cache.load_entry(str(cache_dir / "features" / entry))
    p = loader(tiny_model, str(big), cache_dir)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    # "built" when every kill landed before the publish (the usual case); a builder that got its
    # rename in just before the last kill leaves a complete entry, which is loaded.
    assert json.loads(out.strip().splitlines()[-1])["digest"] == expected
    assert not [d for d in os.listdir(cache_dir / "features") if d.startswith(".partial-")]


def test_prepare_command_builds_then_loads(tmp_path, squad_files, tiny_model):
    config = {
        "data": {
            "train_file": squad_files[0],
            "validation_file": squad_files[1],
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
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    reports = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "data.py"), "prepare", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        reports.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert [r["train"]["status"] for r in reports] == ["built", "loaded"]
    assert [r["validation"]["status"] for r in reports] == ["built", "loaded"]
    assert reports[0]["train"]["examples"] == 400 and reports[0]["validation"]["examples"] == 120
    assert (
        reports[0]["train"]["features"] > 400
        and reports[0]["train"]["key"] == reports[1]["train"]["key"]
    )


def test_audit_recovers_every_generated_answer_and_explains_misses(
    tmp_path, squad_files, tiny_model
):
    def audit(path, *extra):
        proc = subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, "data.py"),
                "audit",
                path,
                "--model",
                tiny_model,
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    report = audit(squad_files[0], "--max-seq-length", "128", "--doc-stride", "32")
    assert report["recovered"] == report["recovered_exact"] == report["answerable"] > 0
    assert report["unrecovered"] == []
    dataset = json.loads(open(squad_files[0]).read())
    qas = [qa for a in dataset["data"] for p in a["paragraphs"] for qa in p["qas"] if qa["answers"]]
    qas[0]["answers"][0]["answer_start"] += 1
    context = dataset["data"][0]["paragraphs"][0]["context"]
    dataset["data"][0]["paragraphs"].append(
        {
            "context": context,
            "qas": [
                {
                    "id": "long",
                    "question": "What is all of it?",
                    "is_impossible": False,
                    "answers": [{"text": context, "answer_start": 0}],
                }
            ],
        }
    )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dataset))
    report = audit(
        str(bad), "--max-seq-length", "64", "--doc-stride", "24", "--max-query-length", "16"
    )
    reasons = {u["id"]: u["reason"] for u in report["unrecovered"]}
    assert reasons[qas[0]["id"]] == "bad answer_start"
    assert reasons["long"] == "answer longer than a window"


def test_truncated_array_is_detected_and_rebuilt(squad_files, tokenizer, tmp_path):
    f1, _ = data.load_or_build_features(
        squad_files[1], tokenizer, SPEC, "validation", str(tmp_path)
    )
    expected = np.array(f1.arrays["offsets"])
    path = tmp_path / "features" / f1.manifest["key"] / "offsets.npy"
    del f1
    path.write_bytes(path.read_bytes()[:-1000])
    f2, status = data.load_or_build_features(
        squad_files[1], tokenizer, SPEC, "validation", str(tmp_path)
    )
    assert status == "built"
    np.testing.assert_array_equal(f2.arrays["offsets"], expected)


def test_complete_entry_loads_without_the_lock_and_is_checksummed_once(
    squad_files, tokenizer, tmp_path, monkeypatch
):
    built, status = data.load_or_build_features(
        squad_files[1], tokenizer, SPEC, "validation", str(tmp_path)
    )
    assert status == "built"

    def no_lock(self, *args, **kwargs):
        raise AssertionError("a complete entry took the build lock")

    monkeypatch.setattr(filelock.FileLock, "acquire", no_lock)
    hashed = []
    real_sha256 = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda p: hashed.append(p) or real_sha256(p))
    entry = tmp_path / "features" / built.manifest["key"]
    cache._verified.clear()  # as a fresh process: the first load checksums every array
    loaded, status = data.load_or_build_features(
        squad_files[1], tokenizer, SPEC, "validation", str(tmp_path)
    )
    assert status == "loaded"
    assert {os.path.basename(p) for p in hashed if str(entry) in p} == {
        name + ".npy" for name in built.manifest["files"]
    } | {"examples.json"}
    hashed.clear()
    cache.load_entry(str(entry))  # the same process again: sizes, dtypes, shapes only
    assert not [p for p in hashed if str(entry) in p]
    np.testing.assert_array_equal(loaded.arrays["input_ids"], built.arrays["input_ids"])


def test_key_changes_with_every_field_that_changes_features(
    squad_files, tokenizer, tiny_model, tmp_path
):
    from transformers import AutoTokenizer

    base = cache.cache_key("abc", tokenizer, SPEC, True, "train")
    assert base == cache.cache_key("abc", tokenizer, SPEC, True, "train")
    other_tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    other_tokenizer.add_tokens(["vorbelor"])  # any change of the tokenizer's state
    variants = [
        cache.cache_key("abd", tokenizer, SPEC, True, "train"),
        cache.cache_key("abc", other_tokenizer, SPEC, True, "train"),
        cache.cache_key("abc", tokenizer, data.FeatureSpec(65, 24, 16), True, "train"),
        cache.cache_key("abc", tokenizer, data.FeatureSpec(64, 25, 16), True, "train"),
        cache.cache_key("abc", tokenizer, data.FeatureSpec(64, 24, 17), True, "train"),
        cache.cache_key("abc", tokenizer, SPEC, False, "train"),
        cache.cache_key("abc", tokenizer, SPEC, True, "validation"),
    ]
    assert len(set(variants + [base])) == len(variants) + 1
    # Tokenizing leaves truncation settings on the tokenizer; they are not part of its identity.
    tokenizer("a question", "a context", truncation="only_second", max_length=32)
    assert cache.cache_key("abc", tokenizer, SPEC, True, "train") == base


def test_waiter_times_out_with_a_clear_message(squad_files, tokenizer, tmp_path):
    import pytest

    path = cache.fetch(squad_files[1], str(tmp_path))
    key = cache.cache_key(files.sha256_file(path), tokenizer, SPEC, True, "validation")
    (tmp_path / "features").mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import filelock, sys, time; l = filelock.FileLock(sys.argv[1]); "
            "l.acquire(); print('held', flush=True); time.sleep(60)",
            str(tmp_path / "features" / f"{key}.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(errors.DataError, match="waited 2s for another process building"):
            data.load_or_build_features(
                squad_files[1], tokenizer, SPEC, "validation", str(tmp_path), lock_timeout=2
            )
    finally:
        holder.kill()
        holder.wait()
    # The holder died: the OS released its lock and the next process builds.
    _, status = data.load_or_build_features(
        squad_files[1], tokenizer, SPEC, "validation", str(tmp_path), lock_timeout=5
    )
    assert status == "built"


def test_https_download_verified_once_and_reused(tmp_path, squad_files, monkeypatch):
    import hashlib

    import pytest
    from loopback import serve

    import constants

    served = tmp_path / "site"
    served.mkdir()
    body = open(squad_files[1], "rb").read()
    (served / "dev.json").write_bytes(body)
    with serve(served) as site:
        requests, url = site.requests, f"{site.url}/dev.json"
        monkeypatch.setitem(
            constants.KNOWN_DATASETS,
            url,
            {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()},
        )
        cache_dir = tmp_path / "cache"
        first = cache.fetch(url, str(cache_dir))
        assert open(first, "rb").read() == body and len(requests) == 1
        assert (
            cache.fetch(url, str(cache_dir)) == first and len(requests) == 1
        )  # verified copy reused, no request
        good = dict(constants.KNOWN_DATASETS[url])
        monkeypatch.setitem(constants.KNOWN_DATASETS, url, {**good, "sha256": "0" * 64})
        with pytest.raises(errors.DataError, match="does not match the known"):
            cache.fetch(url, str(cache_dir))
        assert not [f for f in os.listdir(cache_dir / "downloads") if f.startswith(".partial-")]
        monkeypatch.setitem(constants.KNOWN_DATASETS, url, good)
        # A URL with no registered checksum gets one recorded at download; a damaged cached copy is
        # then caught and fetched again.
        unknown = url.replace("dev.json", "dev.json?unregistered")
        copy = cache.fetch(unknown, str(cache_dir))
        with open(copy, "ab") as f:
            f.write(b" ")
        assert (
            open(cache.fetch(unknown, str(cache_dir)), "rb").read() == body
            and requests[-2:] == [requests[-1]] * 2
        )
        site.stop()  # no network from here: the verified cached copies still serve
        assert open(cache.fetch(url, str(cache_dir)), "rb").read() == body
        assert open(cache.fetch(unknown, str(cache_dir)), "rb").read() == body


def test_prepare_saves_the_model_and_training_then_runs_offline(
    tmp_path, squad_files, tiny_model, monkeypatch
):
    """For clusters whose compute nodes have no internet: prepare on a node that has it, saving
    the model beside the caches; training then needs no network (Hugging Face offline switches)."""
    import yaml
    from trial_runs import run, write_config

    config_path = write_config(tmp_path, squad_files, tiny_model, max_batches=2)
    saved = tmp_path / "models" / "tiny"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "data.py"),
            "prepare",
            "--config",
            config_path,
            "--save-model",
            str(saved),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["model_dir"] == str(saved)
    config = yaml.safe_load(open(config_path))
    config["hyperparameters"]["pretrained_model_name"] = str(saved)
    offline = tmp_path / "offline.yaml"
    offline.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    metrics, _ = run(["--config", str(offline)], tmp_path / "out")
    assert metrics["total"] == 120
