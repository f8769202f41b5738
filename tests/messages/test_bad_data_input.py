"""Bad data input and faults around the data pipeline: strictly typed SQuAD records, unreadable
files, a read-only cache, temporary files of a killed build, quiet feature workers. Each ends in a
DataError naming the file, the record and the fix (exit 1 and one `error:` line from
`data.py prepare`), or is handled; nothing is left half-written.

Permission cases run the command as user nobody (root bypasses file permissions), so their files
live in a directory every user can read: pytest's tmp_path is root's alone."""

import errno
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import filelock
import make_squad_data
import numpy as np
import pytest
from conftest import ROOT
from loopback import serve

import cache
import data
import errors

SPEC = data.FeatureSpec(max_seq_length=64, doc_stride=24, max_query_length=16)
NOBODY = (
    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
)


def dataset(split, n=60):
    """A small SQuAD 2.0 file's contents: 3 articles; dev questions carry 3 answers each."""
    return make_squad_data.make_dataset(n, 5, 3 if split == "validation" else 1, split)


def question_ids(d):
    return [qa["id"] for a in d["data"] for p in a["paragraphs"] for qa in p["qas"]]


# ---------------------------------------------------------------------------------------------
# 1. records: each mutation returns (the record the message must name, questions it takes away)
# ---------------------------------------------------------------------------------------------


def q(answerable, change):
    """Change the first answerable (or unanswerable) question; `change(qa, paragraph)`."""

    def mutate(d):
        p, qa = next(
            (p, qa)
            for a in d["data"]
            for p in a["paragraphs"]
            for qa in p["qas"]
            if bool(qa["answers"]) == answerable
        )
        where = f"question {qa['id']!r}"
        change(qa, p)
        return where, 1

    return mutate


def answer(key, value, i=0):
    """Set (or with value DROP, remove) answers[i][key] of the first answerable question."""

    def change(qa, p):
        if value is DROP:
            del qa["answers"][i][key]
        else:
            qa["answers"][i][key] = value(p["context"]) if callable(value) else value

    return q(True, change)


def article(a, change):
    def mutate(d):
        lost = sum(len(p["qas"]) for p in d["data"][a]["paragraphs"])
        change(d["data"], a)
        return f"article data[{a}]", lost

    return mutate


def paragraph(p, change):
    def mutate(d):
        lost = len(d["data"][0]["paragraphs"][p]["qas"])
        change(d["data"][0]["paragraphs"], p)
        return f"paragraph data[0].paragraphs[{p}]", lost

    return mutate


def context(change):
    def mutate(d):
        par = d["data"][0]["paragraphs"][1]
        where = "paragraph data[0].paragraphs[1]"  # one record: the paragraph, with its questions
        change(par)
        return where, len(par["qas"])

    return mutate


def qa_slot(change):
    """Break the question object data[0].paragraphs[0].qas[1] itself (no usable id)."""

    def mutate(d):
        change(d["data"][0]["paragraphs"][0]["qas"], 1)
        return "question data[0].paragraphs[0].qas[1]", 1

    return mutate


def duplicate(d):
    qas = d["data"][0]["paragraphs"][0]["qas"]
    qas[1]["id"] = qas[0]["id"]
    return f"question {qas[0]['id']!r}", 1


DROP = object()
BOOL = "'is_impossible' must be true or false"
START = "'answer_start' must be a non-negative integer"
TEXT = "'text' must be a non-empty string"
PAST = "runs past the end of the context"
CASES = [
    # is_impossible is a JSON boolean: bool("false") is True
    (
        "impossible-string-false",
        "train",
        q(True, lambda qa, p: qa.update(is_impossible="false")),
        BOOL,
    ),
    (
        "impossible-string-false-dev",
        "validation",
        q(True, lambda qa, p: qa.update(is_impossible="false")),
        BOOL,
    ),
    (
        "impossible-string-true",
        "validation",
        q(False, lambda qa, p: qa.update(is_impossible="true")),
        BOOL,
    ),
    ("impossible-int", "train", q(False, lambda qa, p: qa.update(is_impossible=1)), BOOL),
    ("impossible-null", "validation", q(True, lambda qa, p: qa.update(is_impossible=None)), BOOL),
    (
        "impossible-with-answers",
        "train",
        q(True, lambda qa, p: qa.update(is_impossible=True)),
        "'is_impossible' is true but 'answers' is not empty",
    ),
    (
        "answerable-without-answers",
        "validation",
        q(True, lambda qa, p: qa.update(answers=[])),
        "without answers",
    ),
    ("answers-missing", "train", q(True, lambda qa, p: qa.pop("answers")), "without answers"),
    (
        "answers-object",
        "train",
        q(True, lambda qa, p: qa.update(answers=qa["answers"][0])),
        "'answers' must be a list",
    ),
    (
        "answer-not-object",
        "train",
        q(True, lambda qa, p: qa.update(answers=["Belton"])),
        r"answers\[0\] is not an object",
    ),
    # answer_start: a non-negative integer inside the context
    ("start-negative", "train", answer("answer_start", -3), START),
    ("start-negative-dev", "validation", answer("answer_start", -1), START),
    (
        "start-negative-second-answer-dev",
        "validation",
        answer("answer_start", -2, i=1),
        r"answers\[1\]: " + START,
    ),
    ("start-true", "train", answer("answer_start", True), START),
    ("start-false-dev", "validation", answer("answer_start", False), START),
    ("start-string", "train", answer("answer_start", "12"), START),
    ("start-float-dev", "validation", answer("answer_start", 12.0), START),
    ("start-null", "train", answer("answer_start", None), START),
    ("start-missing-dev", "validation", answer("answer_start", DROP), START),
    ("start-past-end", "train", answer("answer_start", len), PAST),
    ("start-past-end-dev", "validation", answer("answer_start", lambda c: len(c) - 2), PAST),
    (
        "start-off-by-one",
        "train",
        q(
            True,
            lambda qa, p: qa["answers"][0].update(
                answer_start=qa["answers"][0]["answer_start"] + 1
            ),
        ),
        "does not point at the answer text",
    ),
    # answer text: a non-empty string
    ("text-int", "train", answer("text", 5), TEXT),
    ("text-null-dev", "validation", answer("text", None), TEXT),
    ("text-list", "train", answer("text", ["Belton"]), TEXT),
    ("text-empty-dev", "validation", answer("text", ""), TEXT),
    ("text-blank", "train", answer("text", "   "), TEXT),
    ("text-missing-dev", "validation", answer("text", DROP), TEXT),
    ("text-int-second-answer-dev", "validation", answer("text", 7, i=2), r"answers\[2\]: " + TEXT),
    # questions, ids, contexts
    (
        "question-int",
        "train",
        q(True, lambda qa, p: qa.update(question=5)),
        "empty or missing question",
    ),
    (
        "question-missing-dev",
        "validation",
        q(False, lambda qa, p: qa.pop("question")),
        "empty or missing question",
    ),
    ("id-int", "train", qa_slot(lambda qas, i: qas[i].update(id=7)), "missing question id"),
    (
        "question-not-object-dev",
        "validation",
        qa_slot(lambda qas, i: qas.__setitem__(i, "Who?")),
        "expected a question object, found a str",
    ),
    ("duplicate-id", "train", duplicate, "duplicate question id"),
    ("context-number", "train", context(lambda p: p.update(context=5)), "empty or missing context"),
    (
        "context-key-misspelled-dev",
        "validation",
        context(lambda p: p.update(contex=p.pop("context"))),
        "empty or missing context",
    ),
    # misspelled keys and wrong types must not make questions vanish
    (
        "article-key-paragraph",
        "train",
        article(0, lambda arts, a: arts[a].update(paragraph=arts[a].pop("paragraphs"))),
        "expected an object with a 'paragraphs' list, found its keys: 'title', 'paragraph'",
    ),
    (
        "article-key-paragraph-dev",
        "validation",
        article(2, lambda arts, a: arts[a].update(Paragraphs=arts[a].pop("paragraphs"))),
        "found its keys: 'title', 'Paragraphs'",
    ),
    (
        "article-string-dev",
        "validation",
        article(1, lambda arts, a: arts.__setitem__(a, "oops")),
        "found a str",
    ),
    (
        "article-list",
        "train",
        article(0, lambda arts, a: arts.__setitem__(a, arts[a]["paragraphs"])),
        "found a list",
    ),
    (
        "article-null",
        "train",
        article(1, lambda arts, a: arts.__setitem__(a, None)),
        "found a NoneType",
    ),
    (
        "paragraphs-object-dev",
        "validation",
        article(0, lambda arts, a: arts[a].update(paragraphs=arts[a]["paragraphs"][0])),
        "'paragraphs' list",
    ),
    (
        "paragraph-key-qa",
        "train",
        paragraph(1, lambda ps, p: ps[p].update(qa=ps[p].pop("qas"))),
        "expected an object with 'context' and a 'qas' list, found its keys: 'context', 'qa'",
    ),
    (
        "paragraph-string-dev",
        "validation",
        paragraph(0, lambda ps, p: ps.__setitem__(p, ps[p]["context"])),
        "found a str",
    ),
    (
        "qas-object",
        "train",
        paragraph(2, lambda ps, p: ps[p].update(qas=ps[p]["qas"][0])),
        "'qas' list",
    ),
]


@pytest.mark.parametrize(
    "split, mutate, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_record_is_named_or_skipped_and_counted(tmp_path, caplog, split, mutate, message):
    d = dataset(split)
    total = len(question_ids(d))
    where, lost = mutate(d)
    path = str(tmp_path / f"{split}.json")
    with open(path, "w") as f:
        json.dump(d, f)
    with pytest.raises(errors.DataError) as err:
        data.read_squad(path, split)
    text = str(err.value)
    assert text.startswith(f"{path}: {where}") and re.search(message, text), text
    assert "data.skip_invalid_examples: true" in text
    with pytest.raises(errors.DataError):  # only the bool True turns skipping on
        data.read_squad(path, split, skip_invalid="false")
    with caplog.at_level(logging.WARNING, logger="data"):
        kept = data.read_squad(path, split, skip_invalid=True)
    assert kept.skipped >= 1 and len(kept) == total - lost
    assert f"skipping {path}: {where}" in caplog.text and "skipped" in caplog.text


def test_strict_records_keep_what_is_valid(tmp_path):
    """The strict checks reject nothing valid: booleans, answer_start 0, a dev answer whose start is
    off inside the context (annotators' offsets are not labels), SQuAD 1.1 without is_impossible."""
    d = dataset("validation")
    p0 = d["data"][0]["paragraphs"][0]
    p0["qas"].append(
        {
            "id": "at-zero",
            "question": "What starts it?",
            "answers": [{"text": p0["context"][:4], "answer_start": 0}],
        }
    )  # no is_impossible: SQuAD 1.1
    qas = [qa for a in d["data"] for p in a["paragraphs"] for qa in p["qas"]]
    next(qa for qa in qas if qa["answers"])["answers"][1]["answer_start"] += 1
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(d))
    ex = data.read_squad(str(path), "validation")
    assert ex.skipped == 0 and ex.ids == [qa["id"] for qa in qas]
    assert ex.is_impossible == [not qa["answers"] for qa in qas]
    assert ex.answer_start[ex.ids.index("at-zero")] == 0 and all(
        type(s) is int for s in ex.answer_start
    )


# ---------------------------------------------------------------------------------------------
# 2. unreadable input files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["fetch", "read_squad"])
@pytest.mark.parametrize(
    "kind, message",
    [("directory", "is a directory, not a SQuAD JSON file"), ("missing", "no such file")],
)
def test_unreadable_input_file(tmp_path, call, kind, message):
    path = tmp_path / "train.json"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(errors.DataError, match=re.escape(f"{path}: {message}")):
        if call == "fetch":
            cache.fetch(str(path), str(tmp_path / "cache"))
        else:
            data.read_squad(str(path), "train")


@pytest.fixture(scope="module")
def shared(tiny_model):
    """A directory every user can read, with a copy of the tiny model and a home for user nobody."""
    root = tempfile.mkdtemp(prefix="bad-data-input-")
    os.chmod(root, 0o755)
    shutil.copytree(tiny_model, os.path.join(root, "model"))
    os.makedirs(os.path.join(root, "home"))
    subprocess.run(["chmod", "-R", "a+rX", root], check=True)
    os.chmod(os.path.join(root, "home"), 0o777)
    yield root
    subprocess.run(["chmod", "-R", "u+rwX", root], check=True)
    shutil.rmtree(root)


@pytest.fixture
def work(shared):
    path = tempfile.mkdtemp(dir=shared)
    os.chmod(path, 0o755)
    os.mkdir(os.path.join(path, "tmp"), 0o777)
    os.chmod(os.path.join(path, "tmp"), 0o777)  # TMPDIR of the commands: it must stay empty
    return path


def env(shared, work):
    return {
        **os.environ,
        "HOME": os.path.join(shared, "home"),
        "TMPDIR": os.path.join(work, "tmp"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
    }


READER = """
import sys
sys.path.insert(0, {root!r})
import cache, data, errors
try:
    {call}({path!r}, *{args!r})
except errors.DataError as err:
    print("DataError:", err)
"""


@pytest.mark.parametrize(
    "call, args", [("cache.fetch", ("CACHE",)), ("data.read_squad", ("train",))]
)
@pytest.mark.parametrize("how", ["file-mode-000", "directory-not-searchable"])
def test_permission_denied_input_file_as_nobody(shared, work, call, args, how):
    folder = os.path.join(work, "in")
    os.mkdir(folder)
    path = os.path.join(folder, "train.json")
    with open(path, "w") as f:
        json.dump(dataset("train"), f)
    os.chmod(path if how == "file-mode-000" else folder, 0)
    args = tuple(os.path.join(work, "cache") if a == "CACHE" else a for a in args)
    proc = subprocess.run(
        [*NOBODY, sys.executable, "-c", READER.format(root=ROOT, call=call, path=path, args=args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env(shared, work),
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"DataError: {path}: permission denied"), proc.stdout
    assert "chmod a+r" in proc.stdout


# ---------------------------------------------------------------------------------------------
# the real command: data.py prepare --config CONFIG
# ---------------------------------------------------------------------------------------------


def write_config(shared, work, train, dev, cache):
    config = {
        "data": {
            "train_file": train,
            "validation_file": dev,
            "use_bind_mount": False,
            "cache_dir": cache,
        },
        "hyperparameters": {
            "pretrained_model_name": os.path.join(shared, "model"),
            "global_batch_size": 8,
            "max_seq_length": 64,
            "doc_stride": 24,
            "max_query_length": 16,
        },
        "resources": {"slots_per_trial": 1},
    }
    path = os.path.join(work, "config.yaml")
    with open(path, "w") as f:
        json.dump(config, f)  # JSON is YAML
    return path


def prepare(shared, work, config, as_nobody=False, **popen):
    cmd = [
        *(NOBODY if as_nobody else []),
        sys.executable,
        os.path.join(ROOT, "data.py"),
        "prepare",
        "--config",
        config,
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env(shared, work), **popen
    )


def listing(cache):
    return {
        os.path.relpath(os.path.join(d, n), cache)
        for d, dirs, files in os.walk(cache)
        for n in dirs + files
    }


def assert_nothing_half_written(cache_dir, before, failed_split):
    """New in the cache: only its folders, lock files and complete entries of other splits."""
    for path in sorted(listing(cache_dir) - before):
        parts = path.split(os.sep)
        if path in ("features", "downloads") or path.endswith(".lock"):
            continue
        if parts[0] == "features" and not parts[1].startswith("."):
            assert (
                cache.load_entry(os.path.join(cache_dir, "features", parts[1])).manifest["split"]
                != failed_split
            )
            continue
        raise AssertionError(f"left behind in the cache: {path}")


def assert_fails_cleanly(proc, *fragments):
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), last
    for fragment in fragments:
        assert fragment in last, (fragment, last)
    return last


def squad_pair(work):
    paths = []
    for split, seed in (("train", 1), ("validation", 2)):
        d = make_squad_data.make_dataset(40, seed, 1 if split == "train" else 3, split)
        paths.append(os.path.join(work, f"{split}.json"))
        with open(paths[-1], "w") as f:
            json.dump(d, f)
    return paths


CLI_RECORD_CASES = [
    "impossible-string-false",
    "start-negative-dev",
    "start-true",
    "text-int-second-answer-dev",
    "start-past-end-dev",
    "article-key-paragraph",
    "paragraph-key-qa",
    "article-string-dev",
]


@pytest.mark.parametrize("case", CLI_RECORD_CASES)
def test_prepare_names_bad_record_and_leaves_nothing(shared, work, case):
    _, split, mutate, message = next(c for c in CASES if c[0] == case)
    train, dev = squad_pair(work)
    path = train if split == "train" else dev
    with open(path) as f:
        d = json.load(f)
    where, _ = mutate(d)
    with open(path, "w") as f:
        json.dump(d, f)
    cache = os.path.join(work, "cache")
    proc = prepare(shared, work, write_config(shared, work, train, dev, cache))
    last = assert_fails_cleanly(proc, path, where, "data.skip_invalid_examples")
    assert re.search(message, last), last
    assert_nothing_half_written(cache, set(), split)
    assert os.listdir(os.path.join(work, "tmp")) == []


@pytest.mark.parametrize(
    "how", ["train-is-directory", "dev-mode-000", "train-directory-not-searchable"]
)
def test_prepare_unreadable_input_file_as_nobody(shared, work, how):
    train, dev = squad_pair(work)
    cache = os.path.join(work, "cache")
    os.mkdir(cache, 0o777)
    os.chmod(cache, 0o777)
    if how == "train-is-directory":
        os.remove(train)
        os.mkdir(train)
        bad, message, split = train, "is a directory", "train"
    elif how == "dev-mode-000":
        os.chmod(dev, 0)
        bad, message, split = dev, "permission denied", "validation"
    else:
        folder = os.path.join(work, "private")
        os.mkdir(folder)
        train = shutil.move(train, folder)
        os.chmod(folder, 0)
        bad, message, split = train, "permission denied", "train"
    proc = prepare(shared, work, write_config(shared, work, train, dev, cache), as_nobody=True)
    assert_fails_cleanly(proc, f"{bad}: {message}")
    assert_nothing_half_written(cache, set(), split)
    assert os.listdir(os.path.join(work, "tmp")) == []


# ---------------------------------------------------------------------------------------------
# 3. a read-only cache
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(shared):
    """An http server on loopback for the remote-file cases, serving files from shared/site."""
    site = os.path.join(shared, "site")
    os.makedirs(site, exist_ok=True)
    with serve(site) as loopback:
        yield site, loopback.url


@pytest.fixture(scope="module")
def built(shared, served):
    """A complete cache built by the current user (train from an http URL: its verified copy is in
    downloads/): (folder with train.json, dev.json, config.yaml, cache/)."""
    site, url = served
    work = tempfile.mkdtemp(dir=shared)
    os.chmod(work, 0o755)
    os.mkdir(os.path.join(work, "tmp"))
    train, dev = squad_pair(work)
    shutil.copy(train, os.path.join(site, "train.json"))
    os.chmod(os.path.join(site, "train.json"), 0o644)
    proc = prepare(
        shared,
        work,
        write_config(shared, work, f"{url}/train.json", dev, os.path.join(work, "cache")),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {r["status"] for r in json.loads(proc.stdout.strip().splitlines()[-1]).values()} == {
        "built"
    }
    return work


@pytest.fixture
def ro_copy(built, work):
    """A copy of the built cache in `work`, with the config pointing at it."""
    cache = os.path.join(work, "cache")
    shutil.copytree(os.path.join(built, "cache"), cache)
    with open(os.path.join(built, "config.yaml")) as f:
        config = json.load(f)
    config["data"]["cache_dir"] = cache
    with open(os.path.join(work, "config.yaml"), "w") as f:
        json.dump(config, f)
    return cache, os.path.join(work, "config.yaml")


def entry_of(cache, split):
    for name in os.listdir(os.path.join(cache, "features")):
        path = os.path.join(cache, "features", name)
        if (
            os.path.isdir(path)
            and json.load(open(os.path.join(path, "manifest.json")))["split"] == split
        ):
            return path
    raise AssertionError(f"no {split} entry")


def test_read_only_complete_cache_loads_as_nobody(shared, work, ro_copy):
    """The bind-mounted cache is read-only in the container: the lock files cannot be opened, the
    complete entries and the verified download are used without them."""
    cache, config = ro_copy
    before = listing(cache)
    subprocess.run(["chmod", "-R", "a-w", cache], check=True)
    proc = prepare(shared, work, config, as_nobody=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["train"]["status"] == report["validation"]["status"] == "loaded"
    assert report["train"]["examples"] == 40
    assert "cannot open the lock file" in proc.stderr and "Traceback" not in proc.stderr
    assert listing(cache) == before


@pytest.mark.parametrize(
    "how",
    [
        "cache-dir-empty",
        "features-dir-empty",
        "entry-corrupt",
        "entry-not-readable",
        "download-missing",
    ],
)
def test_read_only_cache_that_cannot_serve_is_a_clear_error(shared, work, ro_copy, how):
    cache, config = ro_copy
    fragments = ["data.py prepare", "writable"]
    if how == "cache-dir-empty":
        shutil.rmtree(cache)
        os.mkdir(cache)
        fragments = [
            os.path.join(cache, "downloads"),
            "cannot create the cache directory",
            "data.py prepare",
        ]
    elif how == "features-dir-empty":
        shutil.rmtree(os.path.join(cache, "features"))
        os.mkdir(os.path.join(cache, "features"))
        fragments += ["train.json: no train features in the cache", "is missing", "read-only"]
    elif how == "entry-corrupt":
        npy = os.path.join(entry_of(cache, "train"), "input_ids.npy")
        with open(npy, "r+b") as f:
            f.truncate(os.path.getsize(npy) - 100)
        fragments += ["is unreadable or corrupt", "read-only"]
    elif how == "entry-not-readable":  # built by another user with umask 077
        npy = os.path.join(entry_of(cache, "validation"), "input_ids.npy")
        os.chmod(npy, 0o600)
        fragments = [f"{npy}: permission denied reading the cache entry", "chmod -R a+rX"]
    else:
        for name in os.listdir(os.path.join(cache, "downloads")):
            os.remove(os.path.join(cache, "downloads", name))
        fragments += ["train.json: no verified copy in", "read-only"]
    before = listing(cache)
    subprocess.run(["chmod", "-R", "a-w", cache], check=True)
    proc = prepare(shared, work, config, as_nobody=True)
    if NOBODY or how != "entry-not-readable":
        assert_fails_cleanly(proc, *fragments)
        assert listing(cache) == before  # nothing moved aside, nothing written
    assert os.listdir(os.path.join(work, "tmp")) == []


@pytest.fixture
def lock_fails(monkeypatch):
    """Make every lock file impossible to open, with the given errno (a read-only filesystem, or
    a directory this user may not write)."""

    def set_errno(code):
        def acquire(self, *args, **kwargs):
            raise OSError(code, os.strerror(code), str(self.lock_file))

        monkeypatch.setattr(filelock.FileLock, "acquire", acquire)

    return set_errno


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EPERM])
def test_lock_that_cannot_be_opened_loads_complete_entry(
    squad_files, tokenizer, tmp_path, lock_fails, caplog, code
):
    built, status = data.load_or_build_features(
        squad_files[1], tokenizer, SPEC, "validation", str(tmp_path)
    )
    assert status == "built"
    before = listing(str(tmp_path))
    lock_fails(code)
    # A complete entry is loaded without the lock at all; a missing one needs it.
    loaded, status = data.load_or_build_features(
        squad_files[1], tokenizer, SPEC, "validation", str(tmp_path)
    )
    assert status == "loaded"
    np.testing.assert_array_equal(loaded.arrays["input_ids"], built.arrays["input_ids"])
    with pytest.raises(
        errors.DataError, match="is missing.*read-only or not writable.*data.py prepare"
    ):
        data.load_or_build_features(squad_files[0], tokenizer, SPEC, "train", str(tmp_path))
    assert listing(str(tmp_path)) == before


def test_lock_error_other_than_read_only_is_not_hidden(
    squad_files, tokenizer, tmp_path, lock_fails
):
    lock_fails(errno.EIO)
    with pytest.raises(OSError) as err:
        data.load_or_build_features(squad_files[1], tokenizer, SPEC, "validation", str(tmp_path))
    assert err.value.errno == errno.EIO


def test_read_only_download_cache_serves_verified_copy(tmp_path, served, lock_fails):
    site, url = served
    with open(os.path.join(site, "dev-ro.json"), "w") as f:
        json.dump(dataset("validation", 10), f)
    cache_dir = str(tmp_path / "cache")
    first = cache.fetch(f"{url}/dev-ro.json", cache_dir)
    lock_fails(errno.EROFS)
    assert cache.fetch(f"{url}/dev-ro.json", cache_dir) == first
    with pytest.raises(
        errors.DataError, match="no verified copy in .*read-only or not writable.*data.py prepare"
    ):
        cache.fetch(f"{url}/never-downloaded.json", cache_dir)
    with open(first, "ab") as f:
        f.write(b" ")
    with pytest.raises(errors.DataError, match="expected .*cannot be downloaded again here"):
        cache.fetch(f"{url}/dev-ro.json", cache_dir)


# ---------------------------------------------------------------------------------------------
# 4. and 5. killed or failing builds: temporary files inside the cache, quiet workers
# ---------------------------------------------------------------------------------------------

LOADER = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
sys.path.insert(0, {root!r})
import data
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained({model!r})
f, status = data.load_or_build_features({source!r}, tok, data.FeatureSpec(64, 24, 16), "train", {cache!r}, workers=2)
print(json.dumps({{"status": status}}))
"""


@pytest.fixture(scope="module")
def big(shared):
    path = os.path.join(shared, "big.json")
    with open(path, "w") as f:
        # 60 batches of 1,000: several seconds of building left after the first batch, however fast
        json.dump(make_squad_data.make_dataset(60000, 7, 1, "big"), f)
    os.chmod(path, 0o644)
    return path


def wait_for(proc, marker):
    for line in proc.stderr:
        if marker in line:
            return
    raise AssertionError(f"the build ended before logging {marker!r}")


def test_killed_builder_leaves_debris_only_in_the_cache_and_workers_quiet(shared, work, big):
    """kill -9 the builder while its workers tokenize: they go with it, printing nothing, and its
    temporary files are in the cache, where the next build removes them (none in TMPDIR)."""
    cache = os.path.join(work, "cache")
    code = LOADER.format(root=ROOT, model=os.path.join(shared, "model"), source=big, cache=cache)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(shared, work),
    )
    wait_for(proc, "featurized 1000/60000")
    proc.send_signal(signal.SIGKILL)
    _, rest = proc.communicate(timeout=120)  # EOF once every worker has gone
    assert "Traceback" not in rest and "BrokenPipeError" not in rest, rest[-3000:]
    assert os.listdir(os.path.join(work, "tmp")) == []
    features = os.path.join(cache, "features")
    assert [d for d in os.listdir(features) if d.startswith(".partial-")]
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=env(shared, work),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["status"] == "built"
    assert not [d for d in os.listdir(features) if d.startswith(".partial-")]
    assert os.listdir(os.path.join(work, "tmp")) == []


def children(pid):
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(name))
    return found


def test_interrupted_prepare_is_quiet_and_leaves_nothing(shared, work, big):
    """Ctrl-C reaches the whole process group, here the workers first so that what they do shows:
    they ignore it (before, each printed a KeyboardInterrupt traceback, and one that died holding
    the pool's queue lock could hang the parent), and the command stops with exit 130, no
    traceback, and its temporary directory gone."""
    _, dev = squad_pair(work)
    cache = os.path.join(work, "cache")
    config = write_config(shared, work, big, dev, cache)
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, "data.py"),
            "prepare",
            "--config",
            config,
            "--workers",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env(shared, work),
        start_new_session=True,
    )
    try:
        wait_for(proc, "featurized 1000/60000")
        workers = children(proc.pid)
        assert len(workers) == 2
        for pid in workers:
            os.kill(pid, signal.SIGINT)
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, rest[-3000:]
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest[-3000:]
    assert_nothing_half_written(cache, set(), "train")
    assert os.listdir(os.path.join(work, "tmp")) == []


def test_failing_worker_stops_the_pool_quietly_and_leaves_nothing(
    squad_files, tokenizer, tmp_path, monkeypatch, capfd
):
    examples = data.read_squad(squad_files[0], "train")
    real = data.featurize_batch

    def featurize_batch(examples, lo, hi, *args):
        if lo >= 200:
            raise RuntimeError(f"chunk {lo} failed")
        return real(examples, lo, hi, *args)

    monkeypatch.setattr(data, "featurize_batch", featurize_batch)  # forked workers inherit it
    with pytest.raises(RuntimeError, match="chunk .* failed"):
        data.featurize(
            examples,
            tokenizer,
            SPEC,
            training=True,
            workers=2,
            batch_size=100,
            tmp_dir=str(tmp_path),
        )
    assert os.listdir(tmp_path) == []
    assert "Traceback" not in capfd.readouterr().err


def test_featurize_writes_its_chunks_under_tmp_dir(squad_files, tokenizer, tmp_path, monkeypatch):
    examples = data.read_squad(squad_files[1], "validation")
    seen = []
    real = data.featurize_batch
    monkeypatch.setattr(
        data, "featurize_batch", lambda *a: seen.append(data._WORK["dir"]) or real(*a)
    )
    arrays = data.featurize(
        examples, tokenizer, SPEC, training=False, batch_size=50, tmp_dir=str(tmp_path)
    )
    assert len(arrays["input_ids"]) > len(examples)
    assert seen and all(os.path.dirname(d) == str(tmp_path) for d in seen)
    assert os.listdir(tmp_path) == []
