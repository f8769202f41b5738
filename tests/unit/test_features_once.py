"""featurize_batch tokenizes each distinct context (and question) once and cuts every question's
windows out of those tokens: byte for byte the arrays of the pair tokenizer's own windows
(featurize_batch_pairs), for every family's template, on short, long and crafted contexts, with
several window settings, for training and validation."""

import json
import random

import make_squad_data
import make_tiny_model
import numpy as np
import pytest

import data
import models
import qa_features
import qa_pipeline

SPECS = [
    data.FeatureSpec(384, 128, 64),
    data.FeatureSpec(96, 32, 24),
    data.FeatureSpec(64, 24, 16),
    data.FeatureSpec(48, 30, 8),  # a step of about 7 tokens: many windows per context
    data.FeatureSpec(32, 4, 5, token_type_ids=False),
]
OTHER_FAMILIES = ["bert", "roberta", "electra", "distilbert"]


def _refuse(*args):
    raise AssertionError("featurize_batch went through the pair tokenizer")


def assert_same_features(examples, tokenizer, spec, monkeypatch, batch=1000):
    """featurize_batch, with the pair tokenizer's path out of reach, equals featurize_batch_pairs."""
    for training in (True, False):
        for lo in range(0, len(examples), batch):
            hi = min(lo + batch, len(examples))
            with monkeypatch.context() as m:
                m.setattr(qa_features, "_pair_windows", _refuse)
                new = qa_features.featurize_batch(examples, lo, hi, tokenizer, spec, training)
            reference = qa_features.featurize_batch_pairs(
                examples, lo, hi, tokenizer, spec, training
            )
            assert new.keys() == reference.keys()
            for name in reference:
                a, b = new[name], reference[name]
                assert (a.dtype, a.shape) == (b.dtype, b.shape), (name, spec, training)
                assert a.tobytes() == b.tobytes(), (name, spec, training, lo)


def long_examples(tmp_path, n=240, seed=5):
    """Generated SQuAD 2.0 questions about paragraphs of 12 to 40 filler sentences (160-470 tokens)."""
    path = tmp_path / f"long-{seed}.json"
    path.write_text(json.dumps(make_squad_data.make_dataset(n, seed, 1, "long", filler=(12, 40))))
    return data.read_squad(str(path), "train")


PIECES = [
    "The capital of Vorbelor is Kalo.",
    "  two  spaces ",
    "\ttab\tseparated",
    "new\nline\n\n",
    "non\u00a0breaking",
    "ideographic\u3000space",
    "café naïve façade",
    "e\u0301 combining",
    "東京は日本の首都です。",
    "emoji 🙂 here",
    "zero\u200bwidth",
    "ﬁne ligature",
    "ＦＵＬＬ width",
    "[SEP] literal [CLS]",
    "<s> and </s>",
    "İstanbul",
    "straße",
    "x",
    "...",
    "don't",
    "1,774",
    "   ",
    "Kesel Nortavez",
]


def crafted_examples(seed=0, n_contexts=40):
    """Random contexts and questions of the pieces above (unicode, odd whitespace, literal special
    tokens), from a few words to a few hundred tokens, 1-6 questions each, some far longer than
    max_query_length; answers are random spans, a third unanswerable."""
    rng = random.Random(seed)
    contexts, ex = (
        [],
        dict(
            ids=[],
            questions=[],
            context_index=[],
            answer_start=[],
            answer_text=[],
            is_impossible=[],
        ),
    )
    for c in range(n_contexts):
        context = "".join(
            rng.choice(PIECES) + rng.choice([" ", "", "  ", "\n", "\u3000"])
            for _ in range(rng.choice([1, 3, 10, 30, 80]))
        )
        contexts.append(context)
        for _ in range(rng.randint(1, 6)):
            start = rng.randrange(len(context))
            impossible = rng.random() < 1 / 3
            ex["ids"].append(f"q{len(ex['ids'])}")
            ex["questions"].append(
                " ".join(rng.choice(PIECES) for _ in range(rng.choice([1, 2, 5, 20])))
            )
            ex["context_index"].append(c)
            ex["answer_start"].append(-1 if impossible else start)
            ex["answer_text"].append(
                "" if impossible else context[start : start + rng.randint(1, 12)]
            )
            ex["is_impossible"].append(impossible)
    return data.Examples(contexts=contexts, **ex)


def prefix_examples(tokenizer, context, questions):
    """One question per prefix of `context` cut after each of its first 200 tokens: every context
    length around one window, exactly one window and each further window boundary."""
    offsets = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    contexts = [context[:end] for _, end in offsets[:200]]
    n = len(contexts)
    starts = [max(0, len(c) - 8) for c in contexts]
    return data.Examples(
        [str(i) for i in range(n)],
        [questions[i % len(questions)] for i in range(n)],
        contexts,
        list(range(n)),
        starts,
        [c[s:] for c, s in zip(contexts, starts)],
        [i % 4 == 0 for i in range(n)],
    )


def all_examples(squad_files, tmp_path, tokenizer):
    long = long_examples(tmp_path)
    questions = [
        "Who?",
        "Which city is the capital of Vorbelor in the year of the great festival?",
        " ".join(["really"] * 70) + " who?",
    ]
    return [
        data.read_squad(squad_files[0], "train"),
        data.read_squad(squad_files[1], "validation"),
        long,
        crafted_examples(),
        prefix_examples(tokenizer, long.contexts[0], questions),
    ]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "-".join(map(str, s.__dict__.values())))
def test_same_as_pair_tokenizer_albert(spec, squad_files, tmp_path, tokenizer, monkeypatch):
    assert qa_features.pair_template(tokenizer) is not None
    for examples in all_examples(squad_files, tmp_path, tokenizer):
        assert_same_features(examples, tokenizer, spec, monkeypatch)


def test_same_as_pair_tokenizer_sentencepiece_only(
    sentencepiece_model, squad_files, tmp_path, monkeypatch
):
    tokenizer = models.load_tokenizer(sentencepiece_model)
    for examples in all_examples(squad_files, tmp_path, tokenizer):
        for spec in SPECS[1::2]:
            assert_same_features(examples, tokenizer, spec, monkeypatch)


@pytest.fixture(scope="module", params=OTHER_FAMILIES)
def family_tokenizer(request, tmp_path_factory):
    path = make_tiny_model.build(
        str(tmp_path_factory.mktemp(request.param) / "model"), family=request.param
    )
    return request.param, models.load_tokenizer(path)


@pytest.mark.newest_stack
def test_same_as_pair_tokenizer_other_families(
    family_tokenizer, squad_files, tmp_path, monkeypatch
):
    family, tokenizer = family_tokenizer
    template = qa_features.pair_template(tokenizer)
    assert template.runs == ((1, 2, 1) if family == "roberta" else (1, 1, 1))
    for examples in all_examples(squad_files, tmp_path, tokenizer):
        for spec in (SPECS[0], SPECS[3], SPECS[4]):
            assert_same_features(examples, tokenizer, spec, monkeypatch)


def test_batches_that_split_a_paragraph(squad_files, tokenizer, monkeypatch):
    examples = data.read_squad(squad_files[1], "validation")
    assert_same_features(examples, tokenizer, SPECS[2], monkeypatch, batch=7)


def test_featurize_in_workers_matches_pair_path(tmp_path, tokenizer):
    examples = long_examples(tmp_path, n=600, seed=9)
    spec = SPECS[1]
    built = data.featurize(examples, tokenizer, spec, training=True, workers=2, batch_size=200)
    reference = [
        qa_features.featurize_batch_pairs(
            examples, lo, min(lo + 200, len(examples)), tokenizer, spec, True
        )
        for lo in range(0, len(examples), 200)
    ]
    for name in built:
        assert built[name].tobytes() == np.concatenate([r[name] for r in reference]).tobytes(), name


def test_template_comes_from_the_tokenizer(tiny_model, squad_files, tmp_path, monkeypatch):
    """An unusual layout (XLNet's: question, separator, context, separator, then the classifier
    token, type 2) is read off the tokenizer like any other."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    sep, cls = tokenizer.sep_token_id, tokenizer.cls_token_id
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="$A:0 [SEP]:0 [CLS]:2",
        pair="$A:0 [SEP]:0 [SEP]:0 $B:1 [SEP]:1 [CLS]:2",
        special_tokens=[("[SEP]", sep), ("[CLS]", cls)],
    )
    template = qa_features.pair_template(tokenizer)
    assert (template.runs, template.ids, template.types) == (
        (0, 2, 2),
        (sep, sep, sep, cls),
        (0, 0, 1, 2),
    )
    for examples in all_examples(squad_files, tmp_path, tokenizer)[2:4]:
        assert_same_features(examples, tokenizer, SPECS[2], monkeypatch)


def test_layouts_it_cannot_read_take_the_pair_path(tiny_model, squad_files):
    """Left truncation cuts windows from the other end: featurize_batch hands it to the pair tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model, truncation_side="left")
    assert qa_features.pair_template(tokenizer) is None
    examples = data.read_squad(squad_files[1], "validation")
    new = qa_features.featurize_batch(examples, 0, len(examples), tokenizer, SPECS[3], False)
    reference = qa_features.featurize_batch_pairs(
        examples, 0, len(examples), tokenizer, SPECS[3], False
    )
    assert all(new[k].tobytes() == reference[k].tobytes() for k in reference)


@pytest.mark.newest_stack
def test_byte_level_windows_with_prefix_space_take_the_pair_path(tmp_path):
    """A byte-level tokenizer that trims offsets with add_prefix_space leaves each window's first
    token untrimmed, which a slice of the context's tokens cannot reproduce."""
    from transformers import AutoTokenizer

    path = make_tiny_model.build(str(tmp_path / "roberta"), family="roberta")
    assert qa_features.pair_template(AutoTokenizer.from_pretrained(path)) is not None
    assert (
        qa_features.pair_template(AutoTokenizer.from_pretrained(path, add_prefix_space=True))
        is None
    )


def test_questions_that_leave_no_room_fail_as_the_pair_tokenizer_does(tokenizer):
    examples = data.Examples(
        ["q"], ["who " * 30], ["the cat sat on the mat " * 10], [0], [0], ["the"], [False]
    )
    spec = data.FeatureSpec(24, 4, 30)
    for featurize in (qa_features.featurize_batch, qa_features.featurize_batch_pairs):
        with pytest.raises(Exception, match="Truncation error"):
            featurize(examples, 0, 1, tokenizer, spec, True)


def count_context_tokenizations(monkeypatch, tokenizer, context):
    """A list that counts, as calls go, how many texts equal to `context` the tokenizer is given."""
    seen, call = [], type(tokenizer).__call__

    def spy(self, text=None, *args, **kwargs):
        seen.extend(t for t in (text if isinstance(text, list) else [text]) if t == context)
        return call(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", spy)
    return seen


def test_context_cache(tokenizer, monkeypatch):
    examples = crafted_examples(seed=3, n_contexts=12)
    spec = SPECS[3]
    cache = {}
    first = qa_features.featurize_batch(
        examples, 0, len(examples), tokenizer, spec, False, context_cache=cache
    )
    assert set(cache) == set(examples.contexts)
    seen = count_context_tokenizations(monkeypatch, tokenizer, examples.contexts[0])
    again = qa_features.featurize_batch(
        examples, 0, len(examples), tokenizer, spec, False, context_cache=cache
    )
    assert not seen
    reference = qa_features.featurize_batch_pairs(
        examples, 0, len(examples), tokenizer, spec, False
    )
    for name in reference:
        assert first[name].tobytes() == again[name].tobytes() == reference[name].tobytes()


def test_recent_contexts_keep_the_newest_within_their_token_budget():
    def tokens(n):
        return np.zeros(n, np.int64), np.zeros(n, bool), np.zeros((n, 2), np.int32)

    recent = qa_pipeline.RecentContexts(max_tokens=10)
    recent["a"], recent["b"] = tokens(4), tokens(4)
    assert recent.get("a") is not None  # now the newest
    recent["c"] = tokens(4)
    assert recent.get("b") is None and recent.get("a") is not None and recent.tokens == 8
    recent["whole book"] = tokens(50)  # over the budget alone: kept, and only it
    assert list(recent.entries) == ["whole book"] and recent.tokens == 50


def test_pipeline_tokenizes_a_shared_context_once(tiny_model, tokenizer, monkeypatch):
    from transformers import AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_pretrained(tiny_model).eval()
    model.config.squad_settings = dict(
        max_seq_length=48,
        doc_stride=16,
        max_query_length=16,
        token_type_ids=True,
        n_best_size=5,
        max_answer_length=10,
        null_score_diff_threshold=0.0,
    )
    context = " ".join(crafted_examples(seed=4, n_contexts=1).contexts[0] for _ in range(3))
    asked = [
        {"question": q, "context": context}
        for q in ("Who founded it?", "What is the capital?", "When?")
    ]
    expected = [qa_pipeline.SquadQAPipeline(model=model, tokenizer=tokenizer)(q) for q in asked]
    qa = qa_pipeline.SquadQAPipeline(model=model, tokenizer=tokenizer)
    seen = count_context_tokenizations(monkeypatch, tokenizer, context)
    assert qa(asked) == expected
    assert qa(**asked[0]) == expected[0]
    assert len(seen) == 1
