"""Shared fixtures: a tiny ALBERT-shaped model directory and small generated SQuAD 2.0 files,
built with the project's own tools (the same code `make demo` uses)."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import make_squad_data  # noqa: E402
import make_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    # `make test-oldest` passes the one the newest stack built (make_tiny_model.py's default
    # tokenizer needs transformers 5); loading it with transformers 4.57 is part of that test.
    if os.environ.get("TINY_ALBERT_DIR"):
        return os.path.abspath(os.environ["TINY_ALBERT_DIR"])
    return make_tiny_model.build(str(tmp_path_factory.mktemp("model") / "tiny-albert"))


@pytest.fixture(scope="session")
def sentencepiece_model(tmp_path_factory):
    """A tiny ALBERT whose tokenizer is only a SentencePiece model: spiece.model + tokenizer_config.json."""
    return make_tiny_model.build(
        str(tmp_path_factory.mktemp("model") / "sp-albert"), sentencepiece=True
    )


@pytest.fixture(scope="session")
def squad_files(tmp_path_factory):
    """(train path, dev path): 400 and 120 generated questions."""
    out = tmp_path_factory.mktemp("squad")
    paths = []
    for split, n, seed, variants in (("train", 400, 1, 1), ("dev", 120, 2, 3)):
        path = out / f"{split}-v2.0.json"
        path.write_text(json.dumps(make_squad_data.make_dataset(n, seed, variants, split)))
        paths.append(str(path))
    return tuple(paths)


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)
