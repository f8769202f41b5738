"""The official script's precision-recall analysis (--out-image-dir): AP on hand-worked cases, the
figures, and the CLI (file names, metric keys, errors)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from conftest import ROOT

import files
import squad_eval

NOBODY = 65534
PNGS = [
    "na_prob_hist_hasAns.png",
    "na_prob_hist_noAns.png",
    "pr_exact.png",
    "pr_f1.png",
    "pr_oracle.png",
]


def articles(*qas):
    # Complete SQuAD records (squad_eval.py reads its data file with squad_file's rules): one
    # context holding every gold answer.
    context = " ".join(t for _, golds in qas for t in golds) or "nothing"
    return [
        {
            "paragraphs": [
                {
                    "context": context,
                    "qas": [
                        {
                            "id": q,
                            "question": "What?",
                            "answers": [
                                {"text": t, "answer_start": context.find(t)} for t in golds
                            ],
                        }
                        for q, golds in qas
                    ],
                }
            ]
        }
    ]


DATA = articles(("a", ["Kalo Mira"]), ("b", []), ("c", ["big red dog"]), ("d", ["1628"]))
PREDS = {"a": "Kalo Mira", "b": "x", "c": "red", "d": "1628"}
NA = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}


def ap(curves):
    return {name: pytest.approx(curve[0]) for name, curve in curves.items()}


def test_ap_hand_worked():
    # 3 answerable. Admitted a, b, c, d; point after each: precision = TP/admitted, recall = TP/3.
    # exact:  TP 1,1,1,2 -> (1, 1/3) (1/2, 1/3) (1/3, 1/3) (1/2, 2/3): AP = 1*1/3 + 1/2*1/3 = 1/2
    # F1:     TP 1,1,1.5,2.5 -> (1, 1/3) (1/2, 1/3) (1/2, 1/2) (5/8, 5/6): AP = 1/3 + 1/2*1/6 + 5/8*1/3 = 5/8
    # oracle: TP 1,1,2,3 -> (1, 1/3) (1/2, 1/3) (2/3, 2/3) (3/4, 1): AP = 1/3 + 2/3*1/3 + 3/4*1/3 = 29/36
    curves = squad_eval.precision_recall(DATA, PREDS, NA)
    assert ap(curves) == {"exact": 50.0, "f1": 62.5, "oracle": 100 * 29 / 36}
    _, precisions, recalls = curves["exact"]
    assert precisions == pytest.approx([1, 1, 1 / 2, 1 / 3, 1 / 2])
    assert recalls == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 2 / 3])
    assert list(squad_eval.pr_metrics(curves)) == ["pr_exact_ap", "pr_f1_ap", "pr_oracle_ap"]


def test_equal_probabilities_give_one_point():
    # a and b tie at 0.1: no threshold between them, so the first point comes after both.
    # exact: (1/2, 1/3) (1/3, 1/3) (1/2, 2/3): AP = 1/2*1/3 + 1/2*1/3 = 1/3 (1/2 if a had its own point)
    for na in (
        {**NA, "b": 0.1},
        {"b": 0.1, "a": 0.1, "c": 0.3, "d": 0.4},
    ):  # either order within the tie
        curves = squad_eval.precision_recall(DATA, PREDS, na)
        assert curves["exact"][0] == pytest.approx(100 / 3)
        assert len(curves["exact"][1]) == 4


def test_all_probabilities_equal():
    # One point after all four: exact TP 2 -> precision 2/4, recall 2/3, AP 1/3.
    # oracle: TP 3 -> precision 3/4, recall 1, AP 3/4.
    curves = squad_eval.precision_recall(DATA, PREDS, dict.fromkeys(NA, 0.5))
    assert ap(curves) == {"exact": 100 / 3, "f1": 100 * 2.5 / 4 * 2.5 / 3, "oracle": 75.0}
    assert curves["exact"][1:] == ([1.0, 0.5], [0.0, pytest.approx(2 / 3)])


def test_single_question():
    one = articles(("a", ["Kalo"]))
    assert ap(squad_eval.precision_recall(one, {"a": "Kalo"}, {"a": 3.0})) == {
        "exact": 100,
        "f1": 100,
        "oracle": 100,
    }
    assert ap(squad_eval.precision_recall(one, {"a": ""}, {"a": 3.0})) == {
        "exact": 0,
        "f1": 0,
        "oracle": 100,
    }
    assert squad_eval.precision_recall(articles(("b", [])), {"b": ""}, {"b": 0.2}) == {}


def test_no_answerable_question_adds_nothing():
    data = articles(("b", []), ("e", []))
    assert squad_eval.precision_recall(data, {"b": "", "e": "x"}, {"b": 0.3, "e": 0.9}) == {}
    assert squad_eval.pr_metrics({}) == {}


def test_extra_ids_ignored_and_missing_ids_refused():
    with_extra = {"zz": -1.0, **NA}
    assert ap(squad_eval.precision_recall(DATA, PREDS, with_extra)) == ap(
        squad_eval.precision_recall(DATA, PREDS, NA)
    )
    with pytest.raises(ValueError, match="no-answer probability"):
        squad_eval.precision_recall(DATA, PREDS, {"a": 0.1})


def test_figures_as_png_and_rgb():
    curves = squad_eval.precision_recall(DATA, PREDS, NA)
    figs = squad_eval.figures(DATA, NA, curves)
    assert sorted(figs) == PNGS
    assert squad_eval.figure_png(figs["pr_f1.png"]).startswith(b"\x89PNG\r\n\x1a\n")
    rgb = squad_eval.figure_rgb(figs["na_prob_hist_noAns.png"])
    assert rgb.shape == (400, 500, 3) and rgb.dtype.name == "uint8" and rgb.min() < rgb.max()
    # Scores outside [0, 1], as in null_odds.json (1e9: no valid span); only unanswerable questions.
    data = articles(("b", []), ("e", []), ("f", []))
    figs = squad_eval.figures(data, {"b": -4.5, "e": 2.0, "f": 1e9}, {})
    assert sorted(figs) == ["na_prob_hist_noAns.png"]
    assert squad_eval.figure_png(figs["na_prob_hist_noAns.png"]).startswith(b"\x89PNG")


def test_write_figures_failure_leaves_nothing(tmp_path):
    figs = squad_eval.figures(DATA, NA, squad_eval.precision_recall(DATA, PREDS, NA))
    blocker = files.temp_sibling(str(tmp_path / "pr_oracle.png"))
    os.mkdir(blocker)  # the third temp file cannot be made
    with pytest.raises(squad_eval.errors.UserError, match="cannot write the images"):
        squad_eval.write_figures(str(tmp_path), figs)
    assert os.listdir(tmp_path) == [os.path.basename(blocker)]
    paths = squad_eval.write_figures(str(tmp_path / "new" / "dir"), figs)
    assert (
        sorted(os.path.basename(p) for p in paths) == PNGS
        and sorted(os.listdir(tmp_path / "new/dir")) == PNGS
    )


# --- the command ---


@pytest.fixture
def workdir():
    # Not tmp_path: its parent is root-only, and some cases run as nobody.
    path = tempfile.mkdtemp(prefix="pr-curves-")
    os.chmod(path, 0o755)
    for name, obj in (("data.json", {"data": DATA}), ("pred.json", PREDS), ("na.json", NA)):
        with open(os.path.join(path, name), "w") as f:
            json.dump(obj, f)
    yield path
    shutil.rmtree(path)


def run_eval(d, *args, as_nobody=False):
    prefix, env = [], dict(os.environ)
    if as_nobody and os.geteuid() == 0:  # root may write anywhere
        os.chown(d, NOBODY, NOBODY)
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        env["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="mpl-")  # HOME is still root's
        os.chown(env["MPLCONFIGDIR"], NOBODY, NOBODY)
    argv = [f"{d}/data.json", f"{d}/pred.json"] + [a.format(d=d) for a in args]
    try:
        return subprocess.run(
            prefix + [sys.executable, os.path.join(ROOT, "squad_eval.py")] + argv,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        if prefix:
            shutil.rmtree(env["MPLCONFIGDIR"])


def listing(d):
    return sorted(
        os.path.relpath(os.path.join(root, n), d)
        for root, dirs, files in os.walk(d)
        for n in dirs + files
    )


def one_error(proc, code, *words):
    assert proc.returncode == code and proc.stdout == "", proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr


def test_cli_writes_official_files_and_keys(workdir):
    proc = run_eval(
        workdir, "-n", "{d}/na.json", "--out-image-dir", "{d}/images/new", as_nobody=True
    )  # makes both
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    out = json.loads(proc.stdout)
    expected = squad_eval.evaluate(DATA, PREDS, NA)
    expected.update(pr_exact_ap=50.0, pr_f1_ap=62.5, pr_oracle_ap=100 * 29 / 36)
    assert out == pytest.approx(expected) and list(out) == list(
        expected
    )  # AP keys last, as official
    assert sorted(os.listdir(f"{workdir}/images/new")) == PNGS
    for name in PNGS:
        with open(f"{workdir}/images/new/{name}", "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # -p and -o together: the same metrics in the file, images replaced.
    proc = run_eval(workdir, "-n", "{d}/na.json", "-p", "{d}/images/new", "-o", "{d}/out.json")
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stderr
    with open(f"{workdir}/out.json") as f:
        assert json.load(f) == out
    assert sorted(os.listdir(f"{workdir}/images/new")) == PNGS


def test_cli_without_answerable_questions(workdir):
    with open(f"{workdir}/data.json", "w") as f:
        json.dump({"data": articles(("b", []))}, f)
    proc = run_eval(workdir, "-n", "{d}/na.json", "-p", "{d}/img")
    assert proc.returncode == 0, proc.stderr
    assert not any(k.startswith("pr_") for k in json.loads(proc.stdout))
    assert os.listdir(f"{workdir}/img") == ["na_prob_hist_noAns.png"]


def test_cli_no_ap_keys_without_image_dir(workdir):
    proc = run_eval(workdir, "-n", "{d}/na.json")
    assert proc.returncode == 0 and not any(k.startswith("pr_") for k in json.loads(proc.stdout))


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["-p", "{d}/img"], 2, ["--out-image-dir", "--na-prob-file"]),
        (["--out-image-dir", "{d}/img", "-o", "{d}/out.json"], 2, ["--na-prob-file"]),
        (["-n", "{d}/na.json", "-p", ""], 2, ["--out-image-dir", "empty path"]),
        (["-n", "{d}/na.json", "-p", "{d}/na.json/img"], 1, ["{d}/na.json", "not a directory"]),
        (["-n", "{d}/missing.json", "-p", "{d}/img"], 1, ["{d}/missing.json"]),  # no image dir made
    ],
)
def test_cli_bad_usage(workdir, args, code, words):
    before = listing(workdir)
    proc = run_eval(workdir, *args)
    one_error(proc, code, *[w.format(d=workdir) for w in words])
    assert listing(workdir) == before


@pytest.mark.parametrize("image_dir", ["{d}/ro", "{d}/ro/images/new"])
def test_cli_unwritable_image_dir(workdir, image_dir):
    os.mkdir(f"{workdir}/ro")
    os.chmod(f"{workdir}/ro", 0o555)
    before = listing(workdir)
    proc = run_eval(
        workdir, "-n", "{d}/na.json", "-p", image_dir, "-o", "{d}/out.json", as_nobody=True
    )
    one_error(proc, 1, image_dir.format(d=workdir), "permission denied")
    assert listing(workdir) == before  # no image, temp file, directory or metrics file
