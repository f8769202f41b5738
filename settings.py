"""Experiment config → validated, typed settings, with every rule in one place.

Every command calls `resolve` (or `hyperparameters`) first, on every rank, before anything is
downloaded, featurized or loaded, and reports every problem at once, each naming the key, the value,
what is allowed and the fix:

    python model_def.py --config CONFIG --check     # the resolved settings as JSON, or the errors

The errors are errors.ConfigError: exit code 2, one `error:` line per problem.
"""

import difflib
import json
import math
import os
import re
from typing import Any, Dict, List, Optional

import constants
from errors import ConfigError

# ---------------------------------------------------------------------------------------------
# the rules: one entry per key, checked by `_check`
# ---------------------------------------------------------------------------------------------


class Rule:
    """A key's type and range: kind is bool, int, float, str or a tuple of allowed strings."""

    def __init__(self, kind, low=None, high=None, low_open=False, high_open=False, example=None):
        self.kind, self.low, self.high, self.low_open, self.high_open = (
            kind,
            low,
            high,
            low_open,
            high_open,
        )
        self.example = example

    def allowed(self) -> str:
        if isinstance(self.kind, tuple):
            return "one of " + ", ".join(repr(k) for k in self.kind)
        if self.kind is bool:
            return "true or false (unquoted)"
        if self.kind is str:
            return "a non-empty string"
        noun = "an integer" if self.kind is int else "a number"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {self.high}")
        return noun + (" " + " and ".join(bounds) if bounds else "")


def _check(rule: Rule, value):
    """(typed value, None) or (None, what is wrong)."""
    if isinstance(rule.kind, tuple):
        if isinstance(value, str) and value.lower() in rule.kind:
            return value.lower(), None
        return None, "is not known"
    if rule.kind is bool:
        if isinstance(value, bool):
            return value, None
        hint = (
            " (a quoted string is not a boolean: remove the quotes)"
            if isinstance(value, str)
            else ""
        )
        return None, "is not a boolean" + hint
    if rule.kind is str:
        return (
            (value, None)
            if isinstance(value, str) and value.strip()
            else (None, "is not a non-empty string")
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, "is not a number"
    if not math.isfinite(value):
        return None, "is not a finite number"
    if rule.kind is int:
        if value != int(value):
            return None, "is not an integer"
        value = int(value)
    else:
        value = float(value)
    if rule.low is not None and (value <= rule.low if rule.low_open else value < rule.low):
        return None, "is out of range"
    if rule.high is not None and (value >= rule.high if rule.high_open else value > rule.high):
        return None, "is out of range"
    return value, None


def _int(low=None, high=None, **kw):
    return Rule(int, low, high, **kw)


def _float(low=None, high=None, **kw):
    return Rule(float, low, high, **kw)


HPARAMS: Dict[str, Rule] = {
    "pretrained_model_name": Rule(str, example="albert-xxlarge-v2"),
    "global_batch_size": _int(1, example=32),
    # Validation has no backward pass and no optimizer state to make room for: a batch of its own.
    "per_slot_validation_batch_size": _int(1, example=32),
    "aggregation_frequency": _int(1, example=1),
    "learning_rate": _float(0, low_open=True, example=5.0e-5),
    "optimizer": Rule(("adamw", "radam")),
    "adam_epsilon": _float(0, low_open=True, example=1.0e-8),
    "weight_decay": _float(0, example=0.0),
    "warmup_fraction": _float(0, 1, high_open=True, example=0.1),
    "max_grad_norm": _float(0, low_open=True, example=1.0),
    "epochs": _int(1, example=2),
    "max_batches": _int(0, example=1000),
    "max_seq_length": _int(32, 4096, example=384),  # lengths are stored as int16
    "doc_stride": _int(1, example=128),
    "max_query_length": _int(1, example=64),
    "n_best_size": _int(1, example=20),
    "max_answer_length": _int(1, example=30),
    "null_score_diff_threshold": _float(example=0.0),
    "do_lower_case": Rule(bool),
    "pad_to_max_length": Rule(bool),
    "bucket_by_length": Rule(bool),
    "amp": Rule(("bf16", "fp16", "none")),
    "gradient_checkpointing": Rule(bool),
    "export_hf_model": Rule(bool),
    "zero_optimizer": Rule(bool),
    "seed": _int(0, 2**32, high_open=True, example=42),
    "reporting_period_batches": _int(1, example=50),
    "validation_period_batches": _int(0, example=0),
    "checkpoint_period_batches": _int(0, example=0),
}
DATA: Dict[str, Rule] = {
    "train_file": Rule(
        str, example="https://rajpurkar.github.io/SQuAD-explorer/dataset/train-v2.0.json"
    ),
    "validation_file": Rule(
        str, example="https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v2.0.json"
    ),
    "use_bind_mount": Rule(bool),
    "bind_mount_path": Rule(str, example="/mnt/data"),
    "cache_dir": Rule(str, example="~/.cache/albert-squad"),
    "skip_invalid_examples": Rule(bool),
    "cache_lock_timeout": _float(0, low_open=True, example=3600),
    "feature_workers": _int(1, example=2),
    # A quick run on the real files (Hugging Face's max_train_samples): the first N valid questions.
    "max_train_examples": _int(1, example=2000),
    "max_eval_examples": _int(1, example=500),
}
DATA_DEFAULTS = {
    "use_bind_mount": False,
    "skip_invalid_examples": False,
    "cache_lock_timeout": 3600.0,
}
# Special tokens around question and context: 3 in ALBERT/BERT ([CLS] q [SEP] c [SEP]), 4 in RoBERTa.
SPECIAL_TOKENS = 4


def _section(
    values: Any, rules: Dict[str, Rule], section: str, problems: List[str]
) -> Dict[str, Any]:
    """Typed values of one config section; every problem appended to `problems`."""
    if not isinstance(values, dict):
        problems.append(
            f"{section}: expected a mapping of keys to values, got {json.dumps(values)}"
        )
        return {}
    typed = {}
    for key, value in values.items():
        rule = rules.get(key)
        if rule is None:
            close = difflib.get_close_matches(str(key), rules, n=1)
            problems.append(
                f"{section}.{key}: unknown key"
                + (f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(rules)}")
            )
            continue
        if (
            value is None
            and section == "data"
            and key
            in (
                "bind_mount_path",
                "cache_dir",
                "feature_workers",
                "max_train_examples",
                "max_eval_examples",
            )
        ):
            continue  # left empty: the default
        typed[key], wrong = _check(rule, value)
        if wrong:
            example = (
                f" (for example {json.dumps(rule.example)})" if rule.example is not None else ""
            )
            problems.append(
                f"{section}.{key}: {json.dumps(value)} {wrong}; allowed: {rule.allowed()}{example}"
            )
            del typed[key]
    return typed


def _constants(raw: Dict[str, Any], problems: List[str]) -> Dict[str, Any]:
    """A local run's hyperparameters: plain values or `type: const`; search ranges are for clusters."""
    out = {}
    for name, value in raw.items():
        if not isinstance(value, dict):
            out[name] = value
        elif value.get("type") == "const" and "val" in value:
            out[name] = value["val"]
        else:
            problems.append(
                f"hyperparameters.{name}: a '{value.get('type')}' search range; local runs need constant "
                "values (use a const config, or submit this one to a cluster)"
            )
    return out


def hyperparameters(
    raw: Dict[str, Any], problems: Optional[List[str]] = None, slots: int = 1
) -> Dict[str, Any]:
    """Validated hyperparameters with the defaults filled in. Raises ConfigError with every problem
    unless a `problems` list is given to collect them."""
    collect = problems if problems is not None else []
    hp = {
        **constants.DEFAULT_HPARAMS,
        "max_batches": 0,
        **_section(_constants(raw, collect), HPARAMS, "hyperparameters", collect),
    }
    # Cross-field rules, only where the fields themselves are valid.
    room = hp["max_seq_length"] - hp["max_query_length"] - SPECIAL_TOKENS
    if room < 1:
        collect.append(
            f"hyperparameters.max_query_length: {hp['max_query_length']} leaves no room for the context in "
            f"max_seq_length {hp['max_seq_length']} (with {SPECIAL_TOKENS} special tokens); make "
            "max_query_length smaller or max_seq_length larger"
        )
    elif hp["doc_stride"] >= room:
        collect.append(
            f"hyperparameters.doc_stride: {hp['doc_stride']} must be below the room left for the context, "
            f"max_seq_length - max_query_length - {SPECIAL_TOKENS} = {room}; windows overlap by doc_stride "
            f"tokens (for example {room // 2})"
        )
    if hp.get("global_batch_size", slots) % slots:
        collect.append(
            f"hyperparameters.global_batch_size: {hp['global_batch_size']} does not divide evenly over "
            f"{slots} slots (processes); use a multiple of {slots}"
        )
    if "per_slot_validation_batch_size" not in hp and isinstance(hp.get("global_batch_size"), int):
        # Absent: the training batch per slot, which fits wherever training fits.
        hp["per_slot_validation_batch_size"] = max(1, hp["global_batch_size"] // slots)
    aggregation = hp["aggregation_frequency"]
    for key in (
        "reporting_period_batches",
        "validation_period_batches",
        "checkpoint_period_batches",
    ):
        if aggregation > 1 and hp[key] % aggregation:
            # Determined does not checkpoint a partial gradient accumulation: a trial paused at such a
            # boundary would resume with one under-scaled optimizer step.
            collect.append(
                f"hyperparameters.{key}: {hp[key]} is not a multiple of aggregation_frequency "
                f"{aggregation}; a pause there would lose part of an accumulated step. Use "
                f"{max(aggregation, hp[key] // aggregation * aggregation)}"
            )
    if problems is None and collect:
        raise ConfigError(collect)
    return hp


def _looks_local(name: str) -> bool:
    """A path rather than a hub name: absolute, relative with ./ ../ ~, or under an existing directory."""
    if name.startswith(("/", "./", "../", "~")) or os.sep + os.sep in name:
        return True
    parent = os.path.dirname(name)
    return bool(parent) and os.path.isdir(parent)


def data(raw: Any) -> Dict[str, Any]:
    """A validated `data` section with its defaults; ConfigError names every problem."""
    problems: List[str] = []
    typed = data_section(raw, problems)
    if problems:
        raise ConfigError(problems)
    return typed


def data_section(raw: Any, problems: List[str]) -> Dict[str, Any]:
    if raw is None:
        problems.append(
            "data: missing; it needs train_file and validation_file (local paths, https:// or s3://)"
        )
        return dict(DATA_DEFAULTS)
    typed = {**DATA_DEFAULTS, **_section(raw, DATA, "data", problems)}
    for key in ("train_file", "validation_file"):
        if isinstance(raw, dict) and key not in raw:
            problems.append(
                f"data.{key}: missing; a local path, https:// URL or s3:// URI of a SQuAD-format file"
            )
    if typed["use_bind_mount"]:
        path = typed.get("bind_mount_path")
        if not path:
            problems.append(
                "data.bind_mount_path: missing while data.use_bind_mount is true; set it to the "
                "container_path of the bind mount holding the shared cache (for example /mnt/data)"
            )
        elif not os.path.isdir(path):
            problems.append(
                f"data.bind_mount_path: {path} does not exist here; on a cluster it must be a bind_mounts "
                "container_path; locally set data.use_bind_mount: false and data.cache_dir (or give data.py "
                "prepare --cache-dir the network filesystem's host path)"
            )
    return typed


def resolve(
    config: Any, where: str = "", hparams: Optional[Dict[str, Any]] = None, world_size: int = 1
) -> Dict[str, Any]:
    """The settings of an experiment config: {"hyperparameters", "data", "slots_per_trial"}, all
    validated. `hparams` (a cluster trial's, already plain values) replaces the config's
    hyperparameters. Raises ConfigError naming every problem."""
    problems: List[str] = []
    if not isinstance(config, dict):
        raise ConfigError(
            ["expected an experiment config (a YAML mapping with hyperparameters and data)"], where
        )
    raw_hp = hparams if hparams is not None else config.get("hyperparameters")
    if not isinstance(raw_hp, dict):
        problems.append(
            "hyperparameters: missing or not a mapping; it needs at least global_batch_size"
        )
        raw_hp = {"global_batch_size": 1}  # reported above
    slots = (
        (config.get("resources") or {}).get("slots_per_trial", 1)
        if isinstance(config.get("resources"), (dict, type(None)))
        else None
    )
    typed_slots, wrong = _check(_int(1), slots)
    if wrong:
        problems.append(
            f"resources.slots_per_trial: {json.dumps(slots)} {wrong}; allowed: an integer >= 1"
        )
        typed_slots = 1
    if world_size > 1 and world_size != typed_slots:
        problems.append(
            f"resources.slots_per_trial: {typed_slots}, but {world_size} processes were started; "
            f"start {typed_slots} (torchrun --nproc_per_node {typed_slots}) or change the config"
        )
    hp = hyperparameters(raw_hp, problems, max(typed_slots, world_size))
    if "global_batch_size" not in raw_hp:
        problems.append(
            "hyperparameters.global_batch_size: missing; Determined needs it (for example 32)"
        )
    name = hp["pretrained_model_name"]
    if isinstance(name, str) and not os.path.isdir(name) and _looks_local(name):
        problems.append(
            f"hyperparameters.pretrained_model_name: {name}: no such model directory; give a directory "
            "saved with save_pretrained, or a Hugging Face hub name such as albert-xxlarge-v2"
        )
    data = data_section(config.get("data"), problems)
    if problems:
        raise ConfigError(problems, where)
    return {"hyperparameters": hp, "data": data, "slots_per_trial": typed_slots}


class _Loader(getattr(__import__("yaml"), "CSafeLoader", None) or __import__("yaml").SafeLoader):
    """PyYAML reads 5e-5 (no dot) as a string, where YAML 1.2 and Determined's master read a float:
    this loader reads it as the master does, so a local run and a cluster agree."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_config(path: str) -> Dict[str, Any]:
    """An experiment config file, or ConfigError naming the file and the problem."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.load(f, Loader=_Loader)
    except FileNotFoundError:
        raise ConfigError(["no such config file (configs/ holds the shipped ones)"], path) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise ConfigError([f"cannot read it: {err}"], path) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError(
            [f"not valid YAML{at}: {getattr(err, 'problem', None) or err}"], path
        ) from None
    if not isinstance(config, dict):
        raise ConfigError(
            ["expected an experiment config (a YAML mapping with hyperparameters and data)"], path
        )
    return config
