"""Bad experiment configs and command lines: each ends before anything is downloaded, featurized,
loaded or written, with one line per problem on stderr naming the key, the value, what is allowed
and the fix, and exit code 2. Run in-process through the commands' real entry (errors.run_command),
and a few as subprocesses exactly as a user runs them."""

import copy
import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

import errors
import model_def

BASE = yaml.safe_load(open(os.path.join(ROOT, "configs", "local_tiny.yaml")))

# (id, {dotted key: new value, or DELETE}, substrings the message must contain)
DELETE = object()
CASES = [
    (
        "lr string",
        {"hyperparameters.learning_rate": "fast"},
        ["hyperparameters.learning_rate", '"fast"', "a number > 0"],
    ),
    ("lr negative", {"hyperparameters.learning_rate": -1e-3}, ["learning_rate", "-0.001", "> 0"]),
    ("lr zero", {"hyperparameters.learning_rate": 0}, ["learning_rate", "> 0"]),
    (
        "lr empty",
        {"hyperparameters.learning_rate": None},
        ["learning_rate", "null", "not a number"],
    ),
    (
        "lr boolean",
        {"hyperparameters.learning_rate": True},
        ["learning_rate", "true", "not a number"],
    ),
    ("lr list", {"hyperparameters.learning_rate": [1e-3]}, ["learning_rate", "not a number"]),
    (
        "lr nan",
        {"hyperparameters.learning_rate": float("nan")},
        ["learning_rate", "not a finite number"],
    ),
    (
        "epochs word",
        {"hyperparameters.epochs": "two"},
        ["hyperparameters.epochs", '"two"', "an integer >= 1"],
    ),
    ("epochs zero", {"hyperparameters.epochs": 0}, ["epochs", "an integer >= 1"]),
    ("epochs fraction", {"hyperparameters.epochs": 1.5}, ["epochs", "not an integer"]),
    ("batch zero", {"hyperparameters.global_batch_size": 0}, ["global_batch_size", "0", ">= 1"]),
    ("batch negative", {"hyperparameters.global_batch_size": -8}, ["global_batch_size", ">= 1"]),
    (
        "batch string",
        {"hyperparameters.global_batch_size": "32"},
        ["global_batch_size", '"32"', "not a number"],
    ),
    (
        "batch missing",
        {"hyperparameters.global_batch_size": DELETE},
        ["global_batch_size: missing"],
    ),
    (
        "batch over slots",
        {"hyperparameters.global_batch_size": 9, "resources.slots_per_trial": 2},
        ["global_batch_size", "9", "2 slots", "multiple of 2"],
    ),
    (
        "aggregation zero",
        {"hyperparameters.aggregation_frequency": 0},
        ["aggregation_frequency", ">= 1"],
    ),
    (
        "aggregation fraction",
        {"hyperparameters.aggregation_frequency": 1.5},
        ["aggregation_frequency", "not an integer"],
    ),
    (
        "warmup two",
        {"hyperparameters.warmup_fraction": 2.0},
        ["warmup_fraction", "2.0", ">= 0 and < 1"],
    ),
    ("warmup negative", {"hyperparameters.warmup_fraction": -0.1}, ["warmup_fraction", ">= 0"]),
    ("warmup one", {"hyperparameters.warmup_fraction": 1.0}, ["warmup_fraction", "< 1"]),
    ("n_best zero", {"hyperparameters.n_best_size": 0}, ["n_best_size", ">= 1"]),
    ("answer length zero", {"hyperparameters.max_answer_length": 0}, ["max_answer_length", ">= 1"]),
    (
        "answer length negative",
        {"hyperparameters.max_answer_length": -3},
        ["max_answer_length", ">= 1"],
    ),
    ("seq length tiny", {"hyperparameters.max_seq_length": 16}, ["max_seq_length", ">= 32"]),
    ("seq length huge", {"hyperparameters.max_seq_length": 100000}, ["max_seq_length", "<= 4096"]),
    (
        "seq length string",
        {"hyperparameters.max_seq_length": "384"},
        ["max_seq_length", "not a number"],
    ),
    ("query length zero", {"hyperparameters.max_query_length": 0}, ["max_query_length", ">= 1"]),
    (
        "query fills window",
        {"hyperparameters.max_query_length": 192},
        ["max_query_length", "no room for the context", "max_seq_length 192"],
    ),
    ("stride zero", {"hyperparameters.doc_stride": 0}, ["doc_stride", ">= 1"]),
    (
        "stride too big",
        {"hyperparameters.doc_stride": 156},
        ["doc_stride", "156", "below the room", "= 156"],
    ),
    (
        "optimizer unknown",
        {"hyperparameters.optimizer": "sgd"},
        ["optimizer", '"sgd"', "'adamw', 'radam'"],
    ),
    ("optimizer number", {"hyperparameters.optimizer": 3}, ["optimizer", "3", "'adamw'"]),
    (
        "amp unknown",
        {"hyperparameters.amp": "fp8"},
        ["hyperparameters.amp", '"fp8"', "'bf16', 'fp16', 'none'"],
    ),
    ("amp boolean", {"hyperparameters.amp": True}, ["hyperparameters.amp", "true"]),
    (
        "lower case string",
        {"hyperparameters.do_lower_case": "false"},
        ["do_lower_case", '"false"', "remove the quotes"],
    ),
    ("lower case number", {"hyperparameters.do_lower_case": 1}, ["do_lower_case", "not a boolean"]),
    (
        "bucketing yes",
        {"hyperparameters.bucket_by_length": "yes"},
        ["bucket_by_length", "true or false"],
    ),
    (
        "zero string",
        {"hyperparameters.zero_optimizer": "true"},
        ["zero_optimizer", "remove the quotes"],
    ),
    (
        "export string",
        {"hyperparameters.export_hf_model": "no"},
        ["export_hf_model", "not a boolean"],
    ),
    (
        "checkpointing null",
        {"hyperparameters.gradient_checkpointing": None},
        ["gradient_checkpointing", "null"],
    ),
    ("seed negative", {"hyperparameters.seed": -1}, ["seed", ">= 0"]),
    ("seed huge", {"hyperparameters.seed": 2**32}, ["seed", "< 4294967296"]),
    (
        "report zero",
        {"hyperparameters.reporting_period_batches": 0},
        ["reporting_period_batches", ">= 1"],
    ),
    (
        "report vs aggregation",
        {"hyperparameters.reporting_period_batches": 3, "hyperparameters.aggregation_frequency": 2},
        ["reporting_period_batches", "3", "multiple of aggregation_frequency 2", "Use 2"],
    ),
    (
        "validation negative",
        {"hyperparameters.validation_period_batches": -5},
        ["validation_period_batches", ">= 0"],
    ),
    (
        "validation vs aggregation",
        {
            "hyperparameters.validation_period_batches": 500,
            "hyperparameters.aggregation_frequency": 3,
            "hyperparameters.reporting_period_batches": 3,
        },
        ["validation_period_batches", "500", "aggregation_frequency 3", "Use 498"],
    ),
    (
        "checkpoint vs aggregation",
        {
            "hyperparameters.checkpoint_period_batches": 7,
            "hyperparameters.aggregation_frequency": 4,
            "hyperparameters.reporting_period_batches": 4,
        },
        ["checkpoint_period_batches", "7", "aggregation_frequency 4"],
    ),
    (
        "threshold string",
        {"hyperparameters.null_score_diff_threshold": "high"},
        ["null_score_diff_threshold", "not a number"],
    ),
    (
        "threshold infinite",
        {"hyperparameters.null_score_diff_threshold": float("inf")},
        ["null_score_diff_threshold", "finite"],
    ),
    ("clip zero", {"hyperparameters.max_grad_norm": 0}, ["max_grad_norm", "> 0"]),
    ("epsilon zero", {"hyperparameters.adam_epsilon": 0}, ["adam_epsilon", "> 0"]),
    ("decay negative", {"hyperparameters.weight_decay": -0.1}, ["weight_decay", ">= 0"]),
    ("max batches negative", {"hyperparameters.max_batches": -1}, ["max_batches", ">= 0"]),
    (
        "typo in a key",
        {"hyperparameters.lerning_rate": 1e-3},
        ["hyperparameters.lerning_rate", "unknown key", "did you mean learning_rate"],
    ),
    (
        "unrelated key",
        {"hyperparameters.colour": "blue"},
        ["hyperparameters.colour", "unknown key", "known keys"],
    ),
    (
        "search range",
        {"hyperparameters.learning_rate": {"type": "log", "base": 10, "minval": -5, "maxval": -3}},
        ["learning_rate", "'log' search range", "const config"],
    ),
    (
        "categorical",
        {"hyperparameters.aggregation_frequency": {"type": "categorical", "vals": [1, 2]}},
        ["aggregation_frequency", "'categorical' search range"],
    ),
    (
        "model name empty",
        {"hyperparameters.pretrained_model_name": ""},
        ["pretrained_model_name", "non-empty string"],
    ),
    (
        "model name number",
        {"hyperparameters.pretrained_model_name": 42},
        ["pretrained_model_name", "42"],
    ),
    (
        "model dir missing",
        {"hyperparameters.pretrained_model_name": "generated/no-such-model"},
        ["pretrained_model_name", "generated/no-such-model", "no such model directory"],
    ),
    (
        "model dir absolute",
        {"hyperparameters.pretrained_model_name": "/nonexistent/albert"},
        ["no such model directory"],
    ),
    (
        "no hyperparameters",
        {"hyperparameters": DELETE},
        ["hyperparameters: missing or not a mapping"],
    ),
    (
        "hyperparameters list",
        {"hyperparameters": [1, 2]},
        ["hyperparameters: missing or not a mapping"],
    ),
    ("no data", {"data": DELETE}, ["data: missing", "train_file and validation_file"]),
    ("data list", {"data": ["a.json"]}, ["data: expected a mapping"]),
    ("train file missing", {"data.train_file": DELETE}, ["data.train_file: missing"]),
    (
        "validation file missing",
        {"data.validation_file": DELETE},
        ["data.validation_file: missing"],
    ),
    ("train file number", {"data.train_file": 5}, ["data.train_file", "5", "non-empty string"]),
    (
        "bind mount string",
        {"data.use_bind_mount": "false"},
        ["data.use_bind_mount", '"false"', "remove the quotes"],
    ),
    (
        "bind mount no path",
        {"data.use_bind_mount": True},
        ["data.bind_mount_path: missing", "use_bind_mount is true"],
    ),
    (
        "bind mount absent",
        {"data.use_bind_mount": True, "data.bind_mount_path": "/nonexistent/mnt"},
        ["data.bind_mount_path", "/nonexistent/mnt", "does not exist"],
    ),
    (
        "skip string",
        {"data.skip_invalid_examples": "false"},
        ["data.skip_invalid_examples", '"false"', "not a boolean"],
    ),
    (
        "skip number",
        {"data.skip_invalid_examples": 0},
        ["data.skip_invalid_examples", "not a boolean"],
    ),
    ("lock timeout zero", {"data.cache_lock_timeout": 0}, ["data.cache_lock_timeout", "> 0"]),
    (
        "lock timeout word",
        {"data.cache_lock_timeout": "long"},
        ["data.cache_lock_timeout", "not a number"],
    ),
    ("workers zero", {"data.feature_workers": 0}, ["data.feature_workers", ">= 1"]),
    ("data typo", {"data.trian_file": "x.json"}, ["data.trian_file", "did you mean train_file"]),
    (
        "max train examples zero",
        {"data.max_train_examples": 0},
        ["data.max_train_examples", ">= 1"],
    ),
    (
        "max eval examples word",
        {"data.max_eval_examples": "all"},
        ["data.max_eval_examples", '"all"', "not a number"],
    ),
    ("slots zero", {"resources.slots_per_trial": 0}, ["resources.slots_per_trial", ">= 1"]),
    ("slots word", {"resources.slots_per_trial": "two"}, ["resources.slots_per_trial", '"two"']),
]


def mutated(changes):
    config = copy.deepcopy(BASE)
    config["data"].update(
        train_file="generated/squad/train-v2.0.json",
        validation_file="generated/squad/dev-v2.0.json",
    )
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        node = config
        for p in parents:
            node = node[p]
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    return config


def run_main(capsys, argv):
    """model_def.py's real entry in this process: (exit code, stderr lines)."""
    with pytest.raises(SystemExit) as exit_info:
        errors.run_command(model_def.main, argv)
    return exit_info.value.code, [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")
    ]


@pytest.mark.parametrize("changes, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_value(tmp_path, capsys, changes, expected):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(mutated(changes)))
    before = sorted(os.listdir(tmp_path))
    code, errors = run_main(capsys, ["--config", str(path), "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert len(errors) == 1, errors
    for text in expected:
        assert text in errors[0], (text, errors[0])
    assert errors[0].startswith(f"error: {path}: ")
    assert sorted(os.listdir(tmp_path)) == before  # no output directory, no cache


def test_every_problem_at_once(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            mutated(
                {
                    "hyperparameters.learning_rate": "fast",
                    "hyperparameters.epochs": "two",
                    "data.skip_invalid_examples": "false",
                }
            )
        )
    )
    code, errors = run_main(capsys, ["--config", str(path), "--check"])
    assert code == 2 and len(errors) == 3
    for key, line in zip(
        ("hyperparameters.epochs", "hyperparameters.learning_rate", "data.skip_invalid_examples"),
        errors,
    ):
        assert key in line, (key, line)


def test_check_prints_the_resolved_settings(tmp_path, capsys):
    """--check validates and prints without training; 5e-5 (no dot) is a number, as on the master."""
    path = tmp_path / "config.yaml"
    path.write_text(
        open(os.path.join(ROOT, "configs", "local_tiny.yaml")).read().replace("2.0e-3", "5e-5")
    )
    resolved = errors.run_command(
        model_def.main, ["--config", str(path), "--check", "--output-dir", str(tmp_path / "o")]
    )
    assert resolved["hyperparameters"]["learning_rate"] == 5e-5
    assert (
        resolved["hyperparameters"]["n_best_size"] == 20
        and resolved["data"]["skip_invalid_examples"] is False
    )
    assert '"learning_rate": 5e-05' in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


FILE_CASES = [
    ("missing file", None, ["no such config file"]),
    ("directory", "DIR", ["cannot read it"]),
    ("yaml syntax", "hyperparameters:\n  learning_rate: [1e-3\n", ["not valid YAML at line"]),
    ("tab indentation", "data:\n\ttrain_file: x\n", ["not valid YAML"]),
    ("a list", "- a\n- b\n", ["expected an experiment config"]),
    ("empty", "", ["expected an experiment config"]),
    ("not utf-8", b"name: caf\xe9\n", ["cannot read it"]),
]


@pytest.mark.parametrize(
    "content, expected", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_bad_config_file(tmp_path, capsys, content, expected):
    path = tmp_path / "config.yaml"
    if content == "DIR":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    code, errors = run_main(capsys, ["--config", str(path), "--output-dir", str(tmp_path / "out")])
    assert code == 2 and len(errors) == 1 and str(path) in errors[0]
    assert all(text in errors[0] for text in expected), errors
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], "--config is required"),
        (["--config"], "expected one argument"),
        (
            ["--config", "configs/local_tiny.yaml", "--resume", "/tmp"],
            "expected a checkpoint under",
        ),
        (["--config", "configs/local_tiny.yaml", "--epochs", "3"], "unrecognized arguments"),
    ],
    ids=["no config", "config without value", "resume elsewhere", "unknown flag"],
)
def test_bad_command_line(tmp_path, capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        errors.run_command(model_def.main, argv + ["--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_resume_from_something_that_is_not_a_checkpoint(tmp_path, capsys):
    fake = tmp_path / "out" / "determined" / "not-a-checkpoint"
    fake.mkdir(parents=True)
    code, errors = run_main(
        capsys,
        [
            "--config",
            os.path.join(ROOT, "configs", "local_tiny.yaml"),
            "--output-dir",
            str(tmp_path / "out"),
            "--resume",
            str(fake),
        ],
    )
    assert (
        code == 2 and "not a readable checkpoint" in errors[0] and str(fake) not in os.listdir(fake)
    )


@pytest.mark.parametrize(
    "command, config_text, code, expected",
    [
        (
            "model_def.py",
            "hyperparameters: {learning_rate: fast}\n",
            2,
            "hyperparameters.learning_rate",
        ),
        ("data.py", "data: {skip_invalid_examples: 'false'}\n", 2, "data.skip_invalid_examples"),
    ],
    ids=["train", "prepare"],
)
def test_as_a_user_runs_it(tmp_path, command, config_text, code, expected):
    """The real processes: one line per problem, exit 2, no traceback, on every command that reads a config."""
    path = tmp_path / "config.yaml"
    path.write_text(config_text)
    args = (
        ["prepare", "--config", str(path)]
        if command == "data.py"
        else ["--config", str(path), "--output-dir", str(tmp_path / "out")]
    )
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, command), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == code, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and expected in proc.stderr
    assert all(line.startswith("error: ") for line in proc.stderr.strip().splitlines())
    assert sorted(os.listdir(tmp_path)) == ["config.yaml"]
