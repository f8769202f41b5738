"""Faults a shared cluster brings (issue 20): a run reusing an entry built with other settings, a
feature worker killed alone, a cache shared by a group, a full filesystem, debris after kills."""

import json
import os
import signal
import socket
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


# ---------------------------------------------------------------------------------------------
# a full filesystem: a small tmpfs mounted by the test (root only)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs; skipped where mounting is refused (not root, no CAP_SYS_ADMIN)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if proc.returncode:
        pytest.skip(f"mounting a tmpfs was refused: {proc.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def fill(folder, leave):
    """Fills the filesystem of `folder` until `leave` bytes are free."""
    st = os.statvfs(folder)
    with open(os.path.join(folder, "filler"), "ab") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))


def visible(folder):
    return sorted(n for n in os.listdir(folder) if n != "filler")


def test_full_filesystem_is_named_and_nothing_is_half_written(
    small_fs, tmp_path, tokenizer, tiny_model
):
    import hashlib

    from loopback import serve

    import cache
    import constants
    import models
    import squad_eval

    def expect_full(call):
        with pytest.raises(errors.DiskFull, match=f"the filesystem at {small_fs}.* is full"):
            call()

    # A feature build larger than the filesystem (the arrays of 3,000 questions: several MiB).
    big = tmp_path / "big.json"
    big.write_text(json.dumps(make_squad_data.make_dataset(3000, 7, 1, "train")))
    expect_full(
        lambda: data.load_or_build_features(str(big), tokenizer, SPEC, "train", str(small_fs))
    )
    features = small_fs / "features"
    assert [n for n in os.listdir(features) if not n.endswith(".lock")] == []

    # A download that does not fit: named, tried once (not retried as a network failure).
    served = tmp_path / "site"
    served.mkdir()
    body = big.read_bytes() + b" " * (3 << 20)  # larger than the filesystem
    (served / "big.json").write_bytes(body)
    with serve(served) as site:
        url = f"{site.url}/big.json"
        constants.KNOWN_DATASETS[url] = {
            "bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        try:
            expect_full(lambda: cache.fetch(url, str(small_fs)))
        finally:
            del constants.KNOWN_DATASETS[url]
    assert len(site.requests) == 1
    assert [n for n in os.listdir(small_fs / "downloads") if not n.endswith(".lock")] == []

    # A model directory (export.py, the checkpoint's hf/ and --save-model share this publish),
    # predictions and pictures, on a filesystem left with a few KiB.
    fill(small_fs, 64 << 10)
    expect_full(lambda: models.save_model(tiny_model, str(small_fs / "model")))
    predictions = {f"q{i}": "an answer " * 20 for i in range(2000)}
    expect_full(
        lambda: squad_eval.write_predictions(
            str(small_fs / "preds"), predictions, {}, {}, {"exact": 1.0}
        )
    )
    assert os.listdir(small_fs / "preds") == []
    fill(small_fs, 4 << 10)
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot(range(100))
    expect_full(lambda: squad_eval.write_figures(str(small_fs / "pictures"), {"curve.png": fig}))
    assert visible(small_fs) == ["downloads", "features", "preds"]


# ---------------------------------------------------------------------------------------------
# debris after SIGKILL: the next publish of the same target sweeps it
# ---------------------------------------------------------------------------------------------

KILLED_WRITER = """
import os, signal, sys
sys.path.insert(0, {root!r})
import files
target, how = sys.argv[1], sys.argv[2]
if how == "dir":  # export.py, data.py prepare --save-model, the checkpoint's hf/
    with files.atomic_dir(target) as tmp:
        open(os.path.join(tmp, "config.json"), "w").write("{{}}")
        os.kill(os.getpid(), signal.SIGKILL)
elif how == "between-renames":  # an export over an earlier one, killed between its two renames
    files.os.replace = lambda a, b, real=os.replace: (
        real(a, b), b.endswith(".tmp") and os.kill(os.getpid(), signal.SIGKILL))
    with files.atomic_dir(target) as tmp:
        open(os.path.join(tmp, "config.json"), "w").write("{{}}")
else:  # downloads, predictions, metrics
    with files.atomic_file(target) as tmp:
        open(tmp, "w").write("half")
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_publishes_killed_midway_leave_debris_the_next_run_sweeps(tmp_path, tiny_model):
    import files
    import models

    def killed(target, how):
        code = KILLED_WRITER.format(root=ROOT)
        proc = subprocess.run([sys.executable, "-c", code, str(target), how], timeout=120)
        assert proc.returncode == -signal.SIGKILL

    def hidden(folder):
        return sorted(n for n in os.listdir(folder) if n.startswith("."))

    model = tmp_path / "model"
    killed(model, "dir")
    assert not model.exists() and len(hidden(tmp_path)) == 1  # invisible, but there
    # A temporary directory of a live writer of this host (here: pytest's parent) is left alone.
    keep = tmp_path / f".partial-model.{socket.gethostname()}-{os.getppid()}.tmp"
    keep.mkdir()
    models.save_model(tiny_model, str(model))
    assert (model / "config.json").is_file() and hidden(tmp_path) == [keep.name]
    os.rmdir(keep)

    # Killed between moving the earlier export aside and renaming the new one in: the earlier one
    # is put back by the next run, the half-published one removed.
    killed(model, "between-renames")
    assert not model.exists() and len(hidden(tmp_path)) == 2
    files.sweep_debris(str(model))
    assert (model / "model.safetensors").is_file() and hidden(tmp_path) == []
    models.save_model(tiny_model, str(model))
    assert (model / "model.safetensors").is_file() and hidden(tmp_path) == []

    target = tmp_path / "download.json"
    killed(target, "file")
    assert not target.exists() and len(hidden(tmp_path)) == 1
    with files.atomic_file(str(target)) as tmp, open(tmp, "w") as f:
        f.write("whole")
    assert target.read_text() == "whole" and hidden(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# a cache shared by a group: two users, umask 022
# ---------------------------------------------------------------------------------------------


# data.py prepare with the usual umask (set here: a shell in between may not be able to run this
# Python where it lies under root's home).
UMASK_022_PREPARE = """
import os, runpy, sys
os.umask(0o022)
sys.argv = ["data.py", *sys.argv[1:]]
runpy.run_path("data.py", run_name="__main__")
"""


@pytest.fixture
def group_users():
    """Two new users of one new group: ((uid, gid), (uid, gid)); removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating users needs root")
    group, names = "sqgrp20", ["sqa20", "sqb20"]
    subprocess.run(["userdel", names[0]], capture_output=True)
    subprocess.run(["userdel", names[1]], capture_output=True)
    subprocess.run(["groupdel", group], capture_output=True)
    proc = subprocess.run(["groupadd", group], capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"groupadd refused: {proc.stderr.strip()}")
    try:
        for name in names:
            subprocess.run(["useradd", "-M", "-N", "-g", group, name], check=True)
        import pwd

        yield [(pwd.getpwnam(n).pw_uid, pwd.getpwnam(n).pw_gid) for n in names]
    finally:
        for name in names:
            subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)


def test_cache_shared_by_a_group_works_for_every_member(group_users, tiny_model):
    import shutil
    import stat
    import tempfile

    root = tempfile.mkdtemp(prefix="group-cache-")
    try:
        os.chmod(root, 0o755)
        shutil.copytree(tiny_model, os.path.join(root, "model"))
        squad = os.path.join(root, "train.json")
        with open(squad, "w") as f:
            json.dump(make_squad_data.make_dataset(200, 4, 1, "train"), f)
        home = os.path.join(root, "home")
        os.mkdir(home)
        subprocess.run(["chmod", "-R", "a+rX", root], check=True)
        os.chmod(home, 0o777)
        cache_dir = os.path.join(root, "cache")
        os.mkdir(cache_dir)
        os.chown(cache_dir, 0, group_users[0][1])
        os.chmod(cache_dir, 0o2775)  # how administrators share a directory with a group
        statuses = []
        for (uid, gid), max_train in zip(group_users, (None, 50)):
            config = os.path.join(root, f"config-{uid}.yaml")
            with open(config, "w") as f:
                json.dump(
                    {
                        "data": {
                            "train_file": squad,
                            "validation_file": squad,
                            "use_bind_mount": False,
                            "cache_dir": cache_dir,
                            "max_train_examples": max_train,
                        },
                        "hyperparameters": {
                            "pretrained_model_name": os.path.join(root, "model"),
                            **dict(max_seq_length=64, doc_stride=24, max_query_length=16),
                            "global_batch_size": 8,
                        },
                    },
                    f,
                )
            os.chmod(config, 0o644)
            proc = subprocess.run(
                [
                    *("setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={gid}"),
                    sys.executable,
                    "-c",
                    UMASK_022_PREPARE,
                    *("prepare", "--config", config, "--workers", "2"),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
                env={**os.environ, "HOME": home, "TMPDIR": home, "HF_HUB_OFFLINE": "1"},
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            report = json.loads(proc.stdout.strip().splitlines()[-1])
            statuses.append((report["train"]["status"], report["validation"]["status"]))
        # The second user loads the first's validation entry and builds a train entry of its own.
        assert statuses == [("built", "built"), ("built", "loaded")]
        for folder, _, names in os.walk(cache_dir):
            for path in [folder] + [os.path.join(folder, n) for n in names]:
                mode = os.stat(path).st_mode
                assert mode & stat.S_IWGRP and mode & stat.S_IRGRP, (path, oct(mode))
                assert not mode & stat.S_IWOTH, (path, oct(mode))
                if stat.S_ISDIR(mode):
                    assert mode & stat.S_ISGID, (path, oct(mode))
    finally:
        shutil.rmtree(root)
