"""Every model family in constants.MODEL_FAMILIES goes through the same code path: tiny models of
each kind (WordPiece or byte-level BPE tokenizers built from generated text) get exact labels and
train and evaluate in the real trial."""

import make_tiny_model
import numpy as np
import pytest
from trial_runs import METRIC_KEYS, run, write_config

import constants
import data
import models

# make_tiny_model.py builds these tokenizers with transformers 5's classes.
pytestmark = pytest.mark.newest_stack
FAMILIES = [
    f for f in constants.MODEL_FAMILIES if f != "albert"
]  # ALBERT is every other test's model


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request, tmp_path_factory):
    return request.param, make_tiny_model.build(
        str(tmp_path_factory.mktemp(request.param) / "model"), family=request.param
    )


def test_labels_recover_answers(family_model, squad_files):
    family, path = family_model
    tokenizer = models.load_tokenizer(path)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    assert config.model_type == family
    spec = models.feature_spec(
        {"max_seq_length": 96, "doc_stride": 32, "max_query_length": 24}, config.model_type
    )
    assert spec.token_type_ids == constants.MODEL_FAMILIES[family]["token_type_ids"]
    examples = data.read_squad(squad_files[0], "train")
    train = data.featurize(examples, tokenizer, spec, training=True)
    offsets = data.featurize(examples, tokenizer, spec, training=False)["offsets"]
    labeled = set()
    for f in np.flatnonzero(train["start_positions"]):
        e = train["example_index"][f]
        context = examples.contexts[examples.context_index[e]]
        s, t = train["start_positions"][f], train["end_positions"][f]
        assert context[offsets[f, s, 0] : offsets[f, t, 1]].strip() == examples.answer_text[e]
        labeled.add(e)
    assert labeled == {e for e in range(len(examples)) if not examples.is_impossible[e]}


def test_trains_and_evaluates_in_the_trial(family_model, squad_files, tmp_path):
    _, path = family_model
    metrics, _ = run(
        ["--config", write_config(tmp_path, squad_files, path, max_batches=2)], tmp_path / "out"
    )
    assert METRIC_KEYS <= set(metrics) and metrics["total"] == 120
