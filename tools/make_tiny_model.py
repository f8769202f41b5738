"""Build a tiny ALBERT-shaped model directory offline: config, a SentencePiece-style (Unigram)
fast tokenizer trained on generated text, and random weights.

The result loads with `AutoModelForQuestionAnswering.from_pretrained(OUT_DIR)` and
`AutoTokenizer.from_pretrained(OUT_DIR)` exactly as `albert-xxlarge-v2` does, so local runs and
tests exercise the real loading code. Deterministic for a given seed.

    python tools/make_tiny_model.py OUT_DIR [--hidden-size 128] [--layers 2]
"""

import argparse
import collections
import json
import math
import os
import string
import sys

import torch
from transformers import (
    AlbertConfig,
    AlbertTokenizer,
    AutoConfig,
    AutoModelForQuestionAnswering,
    BertTokenizer,
    RobertaTokenizer,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import make_squad_data  # noqa: E402

import files  # noqa: E402

SPECIAL_TOKENS = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]


def corpus(seed):
    """Generated paragraphs and questions: the text the tiny tokenizer learns its pieces from."""
    for article in make_squad_data.make_dataset(3000, seed, 1, "corpus")["data"]:
        for paragraph in article["paragraphs"]:
            yield paragraph["context"]
            for qa in paragraph["qas"]:
                yield qa["question"]


def train_vocab(min_word_count=10, seed=0):
    """A Unigram (SentencePiece-model) vocabulary estimated from generated text: every word seen at
    least `min_word_count` times becomes a piece scored by its log frequency; rarer words fall back
    to syllable pieces, then single characters, as rare words do in ALBERT's own vocabulary.
    (The `tokenizers` Unigram trainer, tried first, pruned even "the" on this small repetitive corpus.)"""
    words, chars = _counts(seed, prefix="▁")
    total = sum(words.values())
    pieces = {
        w: math.log(c / total) for w, c in words.items() if c >= min_word_count and len(w) > 1
    }
    floor = math.log(1 / total)
    for syllable in make_squad_data.PLACE_SYLLABLES + make_squad_data.PERSON_SYLLABLES:
        for piece in (syllable, "▁" + syllable):
            pieces.setdefault(piece, floor - 1)
    for ch in chars:
        for piece in (ch, "▁" + ch):
            pieces.setdefault(piece, floor - 4)
    pieces.setdefault("▁", floor - 4)
    return [(t, 0.0) for t in SPECIAL_TOKENS] + sorted(pieces.items(), key=lambda kv: -kv[1])


def _counts(seed, prefix=""):
    """(words, characters) of the normalized corpus, as counters in order of first appearance;
    punctuation counts as words of its own, and `prefix` marks word starts ("▁" for SentencePiece)."""
    words, chars = collections.Counter(), collections.Counter()
    for text in corpus(seed):
        normalized = text.replace("``", '"').replace("''", '"').lower()
        chars.update(normalized.replace(" ", ""))
        for word in normalized.split():
            words[prefix + word.strip(string.punctuation)] += 1
            words.update(ch for ch in word if ch in string.punctuation)
    return words, chars


def other_family_tokenizer(family, seed=0):
    """Tokenizers of the other families' kinds, built from the same generated text: WordPiece
    (BERT, ELECTRA, DistilBERT) or byte-level BPE (RoBERTa)."""
    if family == "roberta":
        from tokenizers import ByteLevelBPETokenizer

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(
            list(corpus(seed)),
            vocab_size=600,
            min_frequency=2,
            show_progress=False,
            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        )
        state = json.loads(bpe._tokenizer.to_str())["model"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
        return RobertaTokenizer(vocab=state["vocab"], merges=merges)
    words = [w for w, c in _counts(seed)[0].items() if c >= 10 and w]
    chars = sorted(
        {ch for w in words for ch in w}
        | set(string.ascii_lowercase + string.digits + string.punctuation)
    )
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + ch for ch in chars]
    vocab += [w for w in words if w not in vocab]
    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)


def sentencepiece_model(seed=0, vocab_size=1000):
    """A tiny SentencePiece unigram model (the bytes of an `spiece.model`) trained by sentencepiece's
    own trainer on the generated text, lower-cased as ALBERT's was, with ALBERT's special pieces:
    <pad> 0, <unk> 1, [CLS] 2, [SEP] 3, [MASK] 4."""
    import io

    import sentencepiece

    text = (t.replace("``", '"').replace("''", '"').lower() for t in corpus(seed))
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=text,
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        pad_id=0,
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        character_coverage=1.0,
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return model.getvalue()


def build(
    out_dir, hidden_size=128, layers=2, heads=4, seed=0, family="albert", sentencepiece=False
):
    """Write a tiny model directory of `family` (default ALBERT) with random weights. With
    `sentencepiece` (ALBERT only), the tokenizer is what Google's checkpoints and many Hugging Face
    ALBERT directories carry: `spiece.model` and tokenizer_config.json, no tokenizer.json."""
    torch.manual_seed(seed)
    # No dropout: a few minutes of training do not overfit, and runs on 1 and 2 processes stay comparable.
    common = dict(
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden_size * 4,
        max_position_embeddings=512,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    if sentencepiece:
        spiece = sentencepiece_model(seed)
        config = AlbertConfig(
            vocab_size=1000,
            embedding_size=64,
            classifier_dropout_prob=0.0,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            **common,
        )
        model = AutoModelForQuestionAnswering.from_config(config)
        with files.atomic_dir(out_dir) as tmp:
            model.save_pretrained(tmp)
            with open(os.path.join(tmp, "spiece.model"), "wb") as f:
                f.write(spiece)
            with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
                json.dump(
                    {
                        "tokenizer_class": "AlbertTokenizer",
                        "do_lower_case": True,
                        "remove_space": True,
                        "keep_accents": False,
                        "model_max_length": 512,
                    },
                    f,
                    indent=2,
                )
        return out_dir
    if family == "albert":
        tokenizer = AlbertTokenizer(vocab=train_vocab(seed=seed), do_lower_case=True)
        config = AlbertConfig(
            vocab_size=len(tokenizer),
            embedding_size=64,
            classifier_dropout_prob=0.0,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            **common,
        )
    else:
        tokenizer = other_family_tokenizer(family, seed)
        if family == "distilbert":
            config = AutoConfig.for_model(
                "distilbert",
                vocab_size=len(tokenizer),
                dim=hidden_size,
                n_layers=layers,
                n_heads=heads,
                hidden_dim=hidden_size * 4,
                dropout=0.0,
                attention_dropout=0.0,
                qa_dropout=0.0,
                pad_token_id=tokenizer.pad_token_id,
            )
        else:
            extra = {"embedding_size": 64} if family == "electra" else {}
            if family == "roberta":
                extra = {"max_position_embeddings": 514, "type_vocab_size": 1}
            config = AutoConfig.for_model(
                family,
                vocab_size=len(tokenizer),
                pad_token_id=tokenizer.pad_token_id,
                **{**common, **extra},
            )
    model = AutoModelForQuestionAnswering.from_config(config)
    with files.atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--family", default="albert", choices=["albert", "bert", "roberta", "electra", "distilbert"]
    )
    parser.add_argument(
        "--sentencepiece",
        action="store_true",
        help="ALBERT with only a SentencePiece model (spiece.model), as Google's checkpoints have",
    )
    args = parser.parse_args()
    if args.sentencepiece and args.family != "albert":
        parser.error("--sentencepiece builds an ALBERT model; leave --family at albert")
    build(
        args.out_dir,
        args.hidden_size,
        args.layers,
        args.heads,
        args.seed,
        args.family,
        args.sentencepiece,
    )
    print(f"wrote {args.out_dir}")


if __name__ == "__main__":
    main()
