"""squad_eval.py's command on bad input: one `error:` line, exit 1 (files) or 2 (arguments), no
traceback and no output file written; and on good input, strict JSON."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from conftest import ROOT

import squad_eval

NOBODY = 65534
Q1 = {"id": "q1", "question": "Who?", "answers": [{"text": "Kalo Mira", "answer_start": 0}]}
Q2 = {"id": "q2", "question": "When?", "answers": [{"text": "1628", "answer_start": 18}]}
Q3 = {"id": "q3", "question": "Why?", "answers": []}


def squad(*qas):
    return {
        "version": "v2.0",
        "data": [
            {"title": "t", "paragraphs": [{"context": "Kalo Mira sat in 1628.", "qas": list(qas)}]}
        ],
    }


DATA = squad(Q1, Q2, Q3)
PREDS = {"q1": "Kalo Mira", "q2": "in 1628", "q3": ""}
NA = {"q1": -1.0, "q2": 0.5, "q3": 2.0}
DEFAULT_FILES = {"data.json": DATA, "pred.json": PREDS, "na.json": NA}
ARGV = ["{d}/data.json", "{d}/pred.json", "--na-prob-file", "{d}/na.json", "-o", "{d}/out.json"]

# Special file contents.
MISSING, DIR, LOCKED, RO_DIR, RO_FILE = "<missing>", "<dir>", "<locked>", "<ro-dir>", "<ro-file>"


@pytest.fixture
def workdir():
    # Not tmp_path: its parent is 0700 root-only, and some cases run as nobody.
    path = tempfile.mkdtemp(prefix="bad-eval-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def write_files(d, files):
    for name, content in {**DEFAULT_FILES, **files}.items():
        path = os.path.join(d, name)
        if content is MISSING:
            continue
        if content in (DIR, RO_DIR):
            os.mkdir(path)
            os.chmod(path, 0o755 if content is DIR else 0o555)
            continue
        if content in (LOCKED, RO_FILE):
            raw = json.dumps(DEFAULT_FILES.get(name, {})).encode()
        else:
            raw = content if isinstance(content, bytes) else json.dumps(content).encode()
        with open(path, "wb") as f:
            f.write(raw)
        if content is LOCKED:
            os.chmod(path, 0)
        elif content is RO_FILE:
            os.chmod(path, 0o444)


def snapshot(d):
    """Every path under `d` with its bytes, so any created, changed or leftover file shows."""
    out = {}
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            path = os.path.join(root, name)
            try:
                out[path] = None if os.path.isdir(path) else open(path, "rb").read()
            except PermissionError:
                out[path] = "unreadable"
    return out


def run_eval(argv, d, as_nobody=False):
    prefix = []
    if as_nobody and os.geteuid() == 0:
        # root reads and writes anything; permission errors only happen to another user.
        os.chown(d, NOBODY, NOBODY)
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return subprocess.run(
        prefix
        + [sys.executable, os.path.join(ROOT, "squad_eval.py")]
        + [a.format(d=d) for a in argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def case(id, code, names, files=None, argv=None, as_nobody=False):
    return pytest.param(files or {}, ARGV if argv is None else argv, code, names, as_nobody, id=id)


def with_na(**values):
    return {**NA, **values}


def with_pred(**values):
    return {**PREDS, **values}


CASES = [
    # Bad arguments: exit 2.
    case("no-arguments", 2, ["required"], argv=[]),
    case("one-argument", 2, ["pred_file"], argv=["{d}/data.json"]),
    case("unknown-option", 2, ["--bogus"], argv=ARGV + ["--bogus"]),
    case("thresh-nan", 2, ["'nan'"], argv=ARGV + ["--na-prob-thresh", "nan"]),
    case("thresh-inf", 2, ["'inf'"], argv=ARGV + ["--na-prob-thresh", "inf"]),
    case("thresh-minus-infinity", 2, ["'-Infinity'"], argv=ARGV + ["--na-prob-thresh=-Infinity"]),
    case("thresh-overflow", 2, ["'1e400'"], argv=ARGV + ["-t", "1e400"]),
    case("thresh-not-a-number", 2, ["'high'"], argv=ARGV + ["-t", "high"]),
    case("out-is-pred-file", 2, ["{d}/pred.json", "overwrite"], argv=ARGV[:-1] + ["{d}/pred.json"]),
    case("out-empty-path", 2, ["--out-file", "empty path"], argv=ARGV[:-1] + [""]),
    case("data-empty-path", 2, ["data_file", "empty path"], argv=[""] + ARGV[1:]),
    case("out-is-data-file", 2, ["{d}/data.json", "overwrite"], argv=ARGV[:-1] + ["{d}/data.json"]),
    # Predictions file.
    case("pred-missing", 1, ["{d}/pred.json"], {"pred.json": MISSING}),
    case("pred-directory", 1, ["{d}/pred.json"], {"pred.json": DIR}),
    case(
        "pred-permission-denied",
        1,
        ["{d}/pred.json", "ermission"],
        {"pred.json": LOCKED},
        as_nobody=True,
    ),
    case("pred-empty-file", 1, ["{d}/pred.json", "JSON"], {"pred.json": b""}),
    case("pred-plain-text", 1, ["{d}/pred.json", "JSON"], {"pred.json": b"q1 Kalo Mira\n"}),
    case("pred-truncated", 1, ["{d}/pred.json", "JSON"], {"pred.json": b'{"q1": "Kalo'}),
    case("pred-invalid-utf8", 1, ["{d}/pred.json", "UTF-8"], {"pred.json": b'{"q1": "\xff\xfe"}'}),
    case(
        "pred-latin1",
        1,
        ["{d}/pred.json", "UTF-8"],
        {"pred.json": '{"q1": "café"}'.encode("latin-1")},
    ),
    case("pred-nested-too-deep", 1, ["{d}/pred.json", "JSON"], {"pred.json": b"[" * 100000}),
    case("pred-list", 1, ["{d}/pred.json", "a list"], {"pred.json": ["Kalo Mira", "1628", ""]}),
    case("pred-string", 1, ["{d}/pred.json", "string"], {"pred.json": "Kalo Mira"}),
    case("pred-null", 1, ["{d}/pred.json", "null"], {"pred.json": None}),
    case("pred-value-number", 1, ["{d}/pred.json", "'q2'"], {"pred.json": with_pred(q2=1628)}),
    case(
        "pred-value-null", 1, ["{d}/pred.json", "'q3'", "null"], {"pred.json": with_pred(q3=None)}
    ),
    case(
        "pred-value-list",
        1,
        ["{d}/pred.json", "'q1'", "list"],
        {"pred.json": with_pred(q1=["Kalo Mira"])},
    ),
    case(
        "pred-value-object",
        1,
        ["{d}/pred.json", "'q1'"],
        {"pred.json": with_pred(q1={"text": "Kalo Mira"})},
    ),
    case("pred-value-bool", 1, ["{d}/pred.json", "'q3'"], {"pred.json": with_pred(q3=False)}),
    case(
        "pred-value-nan",
        1,
        ["{d}/pred.json", "'q3'", "NaN"],
        {"pred.json": b'{"q1": "Kalo Mira", "q2": "1628", "q3": NaN}'},
    ),
    case(
        "pred-missing-question",
        1,
        ["{d}/pred.json", "'q2'"],
        {"pred.json": {"q1": "Kalo Mira", "q3": ""}},
    ),
    case("pred-empty-object", 1, ["{d}/pred.json", "'q1'"], {"pred.json": {}}),
    case(
        "pred-duplicate-id",
        1,
        ["{d}/pred.json", "'q1'"],
        {"pred.json": b'{"q1": "Kalo Mira", "q2": "1628", "q3": "", "q1": ""}'},
    ),
    case(
        "arguments-swapped", 1, ["{d}/pred.json", "'data'"], argv=["{d}/pred.json", "{d}/data.json"]
    ),
    # No-answer probability file.
    case("na-missing", 1, ["{d}/na.json"], {"na.json": MISSING}),
    case("na-directory", 1, ["{d}/na.json"], {"na.json": DIR}),
    case(
        "na-permission-denied", 1, ["{d}/na.json", "ermission"], {"na.json": LOCKED}, as_nobody=True
    ),
    case("na-empty-path", 2, ["--na-prob-file", "empty path"], argv=ARGV[:3] + [""]),
    case("na-not-json", 1, ["{d}/na.json", "JSON"], {"na.json": b"q1,0.5\n"}),
    case("na-invalid-utf8", 1, ["{d}/na.json", "UTF-8"], {"na.json": b'{"q\xe9": 0.5}'}),
    case("na-list", 1, ["{d}/na.json", "a list"], {"na.json": [0.1, 0.2, 0.3]}),
    case("na-number", 1, ["{d}/na.json", "number"], {"na.json": 0.5}),
    case("na-missing-question", 1, ["{d}/na.json", "'q3'"], {"na.json": {"q1": 0.1, "q2": 0.2}}),
    case("na-value-string", 1, ["{d}/na.json", "'q2'", "'0.5'"], {"na.json": with_na(q2="0.5")}),
    case("na-value-true", 1, ["{d}/na.json", "'q1'", "true"], {"na.json": with_na(q1=True)}),
    case("na-value-null", 1, ["{d}/na.json", "'q3'", "null"], {"na.json": with_na(q3=None)}),
    case("na-value-list", 1, ["{d}/na.json", "'q1'"], {"na.json": with_na(q1=[0.5])}),
    case(
        "na-value-nan",
        1,
        ["{d}/na.json", "'q2'", "NaN"],
        {"na.json": b'{"q1": 0.1, "q2": NaN, "q3": 0.3}'},
    ),
    case(
        "na-value-infinity",
        1,
        ["{d}/na.json", "'q3'", "Infinity"],
        {"na.json": b'{"q1": 0.1, "q2": 0.2, "q3": Infinity}'},
    ),
    case(
        "na-value-minus-infinity",
        1,
        ["{d}/na.json", "'q1'", "-Infinity"],
        {"na.json": b'{"q1": -Infinity, "q2": 0.2, "q3": 0.3}'},
    ),
    case(
        "na-value-overflows-to-inf",
        1,
        ["{d}/na.json", "'q1'"],
        {"na.json": b'{"q1": 1e400, "q2": 0.2, "q3": 0.3}'},
    ),
    case(
        "na-value-huge-int",
        1,
        ["{d}/na.json", "'q1'"],
        {"na.json": b'{"q1": 1' + b"0" * 400 + b', "q2": 0.2, "q3": 0.3}'},
    ),
    case("na-value-bad-in-extra-id", 1, ["{d}/na.json", "'zz'"], {"na.json": with_na(zz="high")}),
    # Data file.
    case("data-missing", 1, ["{d}/data.json"], {"data.json": MISSING}),
    case("data-directory", 1, ["{d}/data.json"], {"data.json": DIR}),
    case(
        "data-permission-denied",
        1,
        ["{d}/data.json", "ermission"],
        {"data.json": LOCKED},
        as_nobody=True,
    ),
    case(
        "data-not-json", 1, ["{d}/data.json", "JSON"], {"data.json": b"<html>404 Not Found</html>"}
    ),
    case("data-invalid-utf8", 1, ["{d}/data.json", "UTF-8"], {"data.json": b'{"data": ["\x80"]}'}),
    case("data-top-level-list", 1, ["{d}/data.json", "'data'"], {"data.json": DATA["data"]}),
    case("data-no-data-key", 1, ["{d}/data.json", "'data'"], {"data.json": {"version": "v2.0"}}),
    case(
        "data-data-not-list",
        1,
        ["{d}/data.json", "'data'"],
        {"data.json": {"data": DATA["data"][0]}},
    ),
    case(
        "data-article-no-paragraphs",
        1,
        ["{d}/data.json", "data[0]", "'paragraphs'"],
        {"data.json": {"data": [{"title": "t"}]}},
    ),
    case(
        "data-article-string",
        1,
        ["{d}/data.json", "data[0]"],
        {"data.json": {"data": ["Kalo Mira"]}},
    ),
    case(
        "data-paragraphs-not-list",
        1,
        ["{d}/data.json", "data[0]", "'paragraphs'"],
        {"data.json": {"data": [{"paragraphs": {"qas": [Q1]}}]}},
    ),
    case(
        "data-paragraph-no-qas",
        1,
        ["{d}/data.json", "data[0].paragraphs[0]", "'qas'"],
        {"data.json": {"data": [{"paragraphs": [{"context": "Kalo"}]}]}},
    ),
    case(
        "data-qas-not-list",
        1,
        ["{d}/data.json", "data[0].paragraphs[0]", "'qas'"],
        {"data.json": {"data": [{"paragraphs": [{"qas": Q1}]}]}},
    ),
    case(
        "data-qa-no-id",
        1,
        ["{d}/data.json", "qas[1]", "question id"],
        {"data.json": squad(Q1, {"answers": []}, Q3)},
    ),
    case(
        "data-qa-id-number",
        1,
        ["{d}/data.json", "qas[0]", "question id"],
        {"data.json": squad({**Q1, "id": 1}, Q2, Q3)},
    ),
    case("data-qa-not-object", 1, ["{d}/data.json", "qas[2]"], {"data.json": squad(Q1, Q2, "q3")}),
    case(
        "data-answers-missing",
        1,
        ["{d}/data.json", "'q2'", "answers"],
        {"data.json": squad(Q1, {"id": "q2", "question": "When?"}, Q3)},
    ),
    case(
        "data-answers-string",
        1,
        ["{d}/data.json", "'q1'", "answers"],
        {"data.json": squad({**Q1, "answers": "Kalo Mira"}, Q2, Q3)},
    ),
    case(
        "data-answers-strings",
        1,
        ["{d}/data.json", "'q1'", "'text'"],
        {"data.json": squad({**Q1, "answers": ["Kalo Mira"]}, Q2, Q3)},
    ),
    case(
        "data-answer-no-text",
        1,
        ["{d}/data.json", "'q2'", "'text'"],
        {"data.json": squad(Q1, {**Q2, "answers": [{"answer_start": 18}]}, Q3)},
    ),
    case(
        "data-answer-text-number",
        1,
        ["{d}/data.json", "'q2'", "'text'"],
        {"data.json": squad(Q1, {**Q2, "answers": [{"text": 1628}]}, Q3)},
    ),
    case(
        "data-duplicate-question-id",
        1,
        ["{d}/data.json", "'q1'"],
        {"data.json": squad(Q1, Q2, Q3, Q1)},
    ),
    case("data-no-articles", 1, ["{d}/data.json", "no questions"], {"data.json": {"data": []}}),
    case(
        "data-no-questions",
        1,
        ["{d}/data.json", "no questions"],
        {"data.json": {"data": [{"paragraphs": [{"qas": []}]}, {"paragraphs": []}]}},
    ),
    # Output file.
    case(
        "out-is-directory", 1, ["{d}/out", "directory"], {"out": DIR}, argv=ARGV[:-1] + ["{d}/out"]
    ),
    case(
        "out-directory-missing",
        1,
        ["{d}/nowhere/out.json", "does not exist"],
        argv=ARGV[:-1] + ["{d}/nowhere/out.json"],
    ),
    case(
        "out-directory-unwritable",
        1,
        ["{d}/ro/out.json", "ermission"],
        {"ro": RO_DIR},
        argv=ARGV[:-1] + ["{d}/ro/out.json"],
        as_nobody=True,
    ),
    case(
        "out-file-read-only",
        1,
        ["{d}/out.json", "ermission"],
        {"out.json": RO_FILE},
        as_nobody=True,
    ),
]


@pytest.mark.parametrize("files, argv, code, names, as_nobody", CASES)
def test_bad_input(workdir, files, argv, code, names, as_nobody):
    write_files(workdir, files)
    before = snapshot(workdir)
    proc = run_eval(argv, workdir, as_nobody)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("error: ") and proc.stderr.endswith("\n")
    ), proc.stderr
    assert "Traceback" not in proc.stderr
    for name in names:
        assert name.format(d=workdir) in proc.stderr
    assert proc.stdout == ""
    assert snapshot(workdir) == before  # nothing created, nothing changed, no temp file left


@pytest.mark.parametrize(
    "files",
    [
        {"pred.json": with_pred(q2=None)},
        {"na.json": b'{"q1": NaN}'},
        {"data.json": {"data": []}},
        {"pred.json": {"q1": ""}},
    ],
)
def test_existing_output_left_unchanged(workdir, files):
    write_files(workdir, {**files, "out.json": {"exact": 12.5}})
    before = snapshot(workdir)
    proc = run_eval(ARGV, workdir)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ")
    assert snapshot(workdir) == before


def strict_json(text):
    def reject(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=reject)


EXPECTED = squad_eval.evaluate(DATA["data"], PREDS, NA, 1.0)


def test_valid_input_to_stdout(workdir):
    write_files(workdir, {})
    proc = run_eval(ARGV[:4], workdir)
    assert proc.returncode == 0 and proc.stderr == ""
    assert strict_json(proc.stdout) == EXPECTED
    assert EXPECTED["HasAns_total"] == 2 and EXPECTED["best_f1_thresh"] in NA.values()


def test_valid_input_to_file_replaces_atomically(workdir):
    write_files(workdir, {"out.json": b"old"})
    proc = run_eval(ARGV, workdir)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    assert strict_json(open(os.path.join(workdir, "out.json")).read()) == EXPECTED
    assert sorted(os.listdir(workdir)) == ["data.json", "na.json", "out.json", "pred.json"]


def test_extra_ids_are_ignored_with_a_warning(workdir):
    # The official script scores only the data file's questions; extra ids change nothing.
    write_files(workdir, {"pred.json": with_pred(zz="x"), "na.json": with_na(zz=-5.0)})
    proc = run_eval(ARGV[:4] + ["-t", "0.4"], workdir)
    assert proc.returncode == 0, proc.stderr
    assert strict_json(proc.stdout) == squad_eval.evaluate(DATA["data"], PREDS, NA, 0.4)
    assert proc.stderr.startswith("warning: ") and "{d}/pred.json".format(d=workdir) in proc.stderr


def test_utf8_bom_and_no_na_file(workdir):
    write_files(workdir, {"pred.json": b"\xef\xbb\xbf" + json.dumps(PREDS).encode()})
    proc = run_eval(ARGV[:2], workdir)
    assert proc.returncode == 0, proc.stderr
    assert strict_json(proc.stdout) == squad_eval.evaluate(DATA["data"], PREDS)


def test_runs_as_nobody(workdir):
    # The permission cases are only meaningful if the same setup works when nothing is locked.
    write_files(workdir, {})
    proc = run_eval(ARGV, workdir, as_nobody=True)
    assert proc.returncode == 0, proc.stderr
    assert strict_json(open(os.path.join(workdir, "out.json")).read()) == EXPECTED
