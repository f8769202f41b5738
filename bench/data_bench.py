"""Feature-cache benchmark (not a test): cold build, cache size, warm load, against a baseline
measured in the same run. Prints one JSON object on its last line.

    python bench/data_bench.py [--questions 130000] [--workers N] [--model DIR] [--filler 4 7]

Corpus: generated SQuAD 2.0-format questions (tools/make_squad_data.py; --filler: how many filler
sentences a paragraph has, 3 19 for SQuAD-shaped lengths). Tokenizer: the tiny model's
(tools/make_tiny_model.py) unless --model names another. Settings: max_seq_length 384,
doc_stride 128, max_query_length 64, as in the shipped configs.

Baseline: the same features built the straightforward way, as Hugging Face's run_qa.py does:
one process, the fast tokenizer on (question, context) pairs in batches of 1,000, labels in a
Python loop over features. The build tokenizes each distinct context of a batch once
(`context_once`: false when the tokenizer's pair layout could not be read and the build took the
pair tokenizer's path too); `features_match_pair_path` checks its first batches byte for byte
against that path.
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import cache  # noqa: E402
import data  # noqa: E402
import models  # noqa: E402
import qa_features  # noqa: E402
import settings  # noqa: E402

SPEC = models.feature_spec(
    settings.hyperparameters({}), "albert"
)  # the cluster configs' 384 / 128 / 64


def baseline_labels(examples, tokenizer, spec):
    """run_qa.py-style: batched tokenizer calls, then a Python loop per feature for the labels."""
    starts, ends = [], []
    for lo in range(0, len(examples), 1000):
        hi = min(lo + 1000, len(examples))
        questions = qa_features.truncate_questions(
            examples.questions[lo:hi], tokenizer, spec.max_query_length
        )
        contexts = [examples.contexts[i] for i in examples.context_index[lo:hi]]
        enc = tokenizer(
            questions,
            contexts,
            truncation="only_second",
            max_length=spec.max_seq_length,
            stride=spec.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="max_length",
        )
        for i, offsets in enumerate(enc["offset_mapping"]):
            e = lo + enc["overflow_to_sample_mapping"][i]
            seq = enc.sequence_ids(i)
            if examples.is_impossible[e]:
                starts.append(0), ends.append(0)
                continue
            start_char = examples.answer_start[e]
            end_char = start_char + len(examples.answer_text[e])
            first = seq.index(1)
            last = len(seq) - 1 - seq[::-1].index(1)
            if offsets[first][0] > start_char or offsets[last][1] < end_char:
                starts.append(0), ends.append(0)
                continue
            s = first
            while s <= last and offsets[s][0] <= start_char:
                s += 1
            t = last
            while t >= first and offsets[t][1] >= end_char:
                t -= 1
            starts.append(s - 1), ends.append(t + 1)
    return np.array(starts), np.array(ends)


CHILD_BUILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import data
tok = models.load_tokenizer({model!r})
t = time.time()
f, status = data.load_or_build_features({source!r}, tok, data.FeatureSpec(*{spec!r}), "train", {cache!r}, workers={workers})
seconds = time.time() - t
rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
print(json.dumps({{"seconds": seconds, "status": status, "features": len(f), "peak_rss_mb": rss, "key": f.manifest["key"]}}))
"""

CHILD_WARM = """
import json, sys, time
sys.path.insert(0, {root!r})
import numpy as np, torch
import data
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
tok = models.load_tokenizer({model!r})
before = rss()
t = time.time()
f, status = data.load_or_build_features({source!r}, tok, data.FeatureSpec(*{spec!r}), "train", {cache!r})
loader = torch.utils.data.DataLoader(data.FeatureDataset(f), batch_size=32, shuffle=True,
                                     collate_fn=data.Collator(f.arrays))
batch = next(iter(loader))
first_batch = time.time() - t
print(json.dumps({{"status": status, "first_batch_s": first_batch, "rss_delta_mb": rss() - before, "rss_mb": rss()}}))
"""


def child(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=130000)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument(
        "--model", help="tokenizer directory or name (default: a freshly built tiny model)"
    )
    parser.add_argument(
        "--filler",
        type=int,
        nargs=2,
        default=(4, 7),
        metavar=("LO", "HI"),
        help="filler sentences per generated paragraph (default: 4 7, the demo's)",
    )
    args = parser.parse_args()
    import make_squad_data
    import make_tiny_model

    with tempfile.TemporaryDirectory(prefix="data-bench-") as tmp:
        model = args.model or make_tiny_model.build(os.path.join(tmp, "tiny"))
        source = os.path.join(tmp, "train.json")
        with open(source, "w") as f:
            json.dump(
                make_squad_data.make_dataset(
                    args.questions, 11, 1, "bench", filler=tuple(args.filler)
                ),
                f,
            )
        cache_dir = os.path.join(tmp, "cache")
        fmt = dict(
            root=ROOT,
            model=model,
            source=source,
            cache=cache_dir,
            workers=args.workers,
            spec=dataclasses.astuple(SPEC),
        )
        cold = child(CHILD_BUILD.format(**fmt))
        warm = child(CHILD_WARM.format(**fmt))
        entry = os.path.join(cache_dir, "features", cold["key"])
        cache_mb = sum(os.path.getsize(os.path.join(entry, n)) for n in os.listdir(entry)) / 2**20

        # Baseline, in this process: parse + tokenize + Python-loop labels.
        tokenizer = models.load_tokenizer(model)
        t = time.time()
        examples = data.read_squad(source, "train")
        base_start, base_end = baseline_labels(examples, tokenizer, SPEC)
        baseline_s = time.time() - t
        built = cache.load_entry(entry)
        labels_match = bool(
            np.array_equal(base_start, built.arrays["start_positions"])
            and np.array_equal(base_end, built.arrays["end_positions"])
        )
        pair_path = [
            qa_features.featurize_batch_pairs(
                examples, lo, min(lo + 1000, len(examples)), tokenizer, SPEC, training=True
            )
            for lo in range(0, min(len(examples), 3000), 1000)
        ]
        rows = sum(len(p["input_ids"]) for p in pair_path)
        features_match = all(
            np.concatenate([p[k] for p in pair_path]).tobytes() == built.arrays[k][:rows].tobytes()
            for k in pair_path[0]
        )
    result = {
        "questions": args.questions,
        "filler": list(args.filler),
        "features": cold["features"],
        "workers": args.workers,
        "build_questions_per_s": round(args.questions / cold["seconds"], 1),
        "baseline_questions_per_s": round(args.questions / baseline_s, 1),
        "speedup": round(baseline_s / cold["seconds"], 2),
        "peak_rss_mb": round(cold["peak_rss_mb"], 1),
        "cache_mb": round(cache_mb, 1),
        "warm_first_batch_s": round(warm["first_batch_s"], 3),
        "warm_rss_mb": round(warm["rss_delta_mb"], 1),
        "warm_process_rss_mb": round(warm["rss_mb"], 1),
        "labels_match_baseline": labels_match,
        "context_once": qa_features.pair_template(tokenizer) is not None,
        "features_match_pair_path": features_match,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
