"""Training and evaluation speed benchmarks (not tests). Each prints one JSON object on its last line.

    python bench/train_bench.py train_step [--shape S] [--amp bf16|fp16|none] [--batch B] [--device cpu|cuda]
    python bench/train_bench.py eval_step  [--shape S] [--amp ...] [--batches 2,8,32] [--device ...]
    python bench/train_bench.py validation_batch [--config configs/const.yaml]   # its training vs validation batch
    python bench/train_bench.py bucketing  [--shape S] [--amp ...] [--batch B]
    python bench/train_bench.py postprocess [--questions 12000]
    python bench/train_bench.py eval_traffic   # bytes sent per validation at 8 and 64 ranks

Shapes: `albert-xxlarge-v2` (hidden 4096, 12 layers, 64 heads, FFN 16384, embeddings 128, vocab
30000; built from its config with random weights: no download) is the default on a GPU; on a CPU
the default is `albert-xxlarge-v2/8` (the same depth with hidden, heads and FFN divided by 8),
and the JSON says so.

Model FLOPs per training sequence of S tokens: 3 x layers x S x (24 H^2 + 4 S H) (forward matmuls
and attention, x3 for forward + backward); with H = 4096, 12 layers, S = 384: 5.65 TFLOP.
MFU = achieved model FLOP/s / peak. Peak: the GPU's dense (no sparsity) bf16 or fp16 tensor peak
from GPU_PEAK_TFLOPS (each row names its source; MFU is null for a GPU not in it, and for bf16 on
GPUs without bf16 tensor cores) or, on a CPU, the float32 matmul rate measured in the same run (a
2048^3 matmul), so the CPU figure is relative to what this machine can do. --amp on a CPU runs CPU
autocast in that dtype (fp16 with a gradient scaler, as on a GPU); the CPU default is fp32.
"""

import argparse
import contextlib
import functools
import json
import os
import re
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import settings  # noqa: E402

XXLARGE = dict(
    vocab_size=30000,
    embedding_size=128,
    hidden_size=4096,
    num_hidden_layers=12,
    num_attention_heads=64,
    intermediate_size=16384,
)
# Dense bf16 / fp16 tensor-core peaks, TFLOP/s (None: no bf16 tensor cores). First pattern that
# matches torch.cuda.get_device_name wins, so variants come before their family.
GPU_PEAK_TFLOPS = [
    (r"H200 NVL", 836.0, 836.0, "NVIDIA H200 datasheet (NVL; 1,671 with sparsity)"),
    (r"H200", 989.0, 989.0, "NVIDIA H200 datasheet (SXM; 1,979 with sparsity)"),
    (r"H100 NVL", 835.0, 835.0, "NVIDIA H100 datasheet (NVL; 1,671 with sparsity)"),
    (r"H100 PCIe", 756.0, 756.0, "NVIDIA H100 datasheet (PCIe; 1,513 with sparsity)"),
    (r"H100", 989.0, 989.0, "NVIDIA H100 datasheet (SXM; 1,979 with sparsity)"),
    (r"A100", 312.0, 312.0, "NVIDIA A100 datasheet (SXM and PCIe; 624 with sparsity)"),
    (
        r"A10G",
        70.0,
        70.0,
        "Baseten's A10 vs A10G comparison (AWS-only part; NVIDIA publishes no A10G datasheet)",
    ),
    (r"L40S", 362.0, 362.0, "NVIDIA L40S datasheet (733 with sparsity)"),
    (r"\bL4\b", 121.0, 121.0, "NVIDIA L4 datasheet (242 with sparsity)"),
    (r"\bT4\b", None, 65.0, "NVIDIA T4 datasheet (mixed precision FP16/FP32; no bf16)"),
    (r"V100S", None, 130.0, "NVIDIA V100S datasheet (PCIe; no bf16)"),
    (r"V100.*PCIE", None, 112.0, "NVIDIA V100 datasheet (PCIe; no bf16)"),
    (r"V100", None, 125.0, "NVIDIA V100 datasheet (SXM2; no bf16)"),
]


def shape_config(shape: str) -> dict:
    if shape == "albert-xxlarge-v2":
        return dict(XXLARGE)
    if shape == "tiny":  # bench/gpu_check.py's CPU smoke run: the same code, seconds not minutes
        return dict(
            vocab_size=1000,
            embedding_size=32,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=256,
        )
    if shape.startswith("albert-xxlarge-v2/"):
        k = int(shape.split("/")[1])
        return dict(
            XXLARGE,
            hidden_size=4096 // k,
            num_attention_heads=64 // k,
            intermediate_size=16384 // k,
        )
    raise SystemExit(
        f"unknown --shape {shape!r}: use albert-xxlarge-v2, albert-xxlarge-v2/K or tiny"
    )


def build_model(shape: str, device: torch.device):
    from transformers import AlbertConfig, AlbertForQuestionAnswering

    config = AlbertConfig(
        **shape_config(shape), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    config._attn_implementation = "sdpa"
    return AlbertForQuestionAnswering(config).to(device), config


def flops_per_sequence(config, tokens: int) -> float:
    h = config.hidden_size
    return 3.0 * config.num_hidden_layers * tokens * (24 * h * h + 4 * tokens * h)


def gpu_peak(name: str, amp: str) -> tuple:
    """(dense TFLOP/s or None, source) for a GPU name and amp (bf16 | fp16)."""
    for pattern, bf16, fp16, source in GPU_PEAK_TFLOPS:
        if re.search(pattern, name, re.IGNORECASE):
            tflops = bf16 if amp == "bf16" else fp16
            if tflops is None:
                return None, f"{name}: no {amp} tensor-core peak ({source})"
            return tflops, f"{name} dense {amp}: {tflops} TFLOP/s ({source})"
    return None, f"{name}: no peak known (add it to GPU_PEAK_TFLOPS in bench/train_bench.py)"


def peak_flops(device: torch.device, amp: str = "bf16") -> tuple:
    if device.type == "cuda":
        if amp not in ("bf16", "fp16"):
            return float("nan"), f"amp {amp}: the table holds 16-bit tensor-core peaks only"
        tflops, note = gpu_peak(torch.cuda.get_device_name(device), amp)
        return (float("nan") if tflops is None else tflops * 1e12), note
    rate = cpu_matmul_rate()
    return rate, f"CPU float32 2048^3 matmul measured in this run: {rate / 1e9:.1f} GFLOP/s"


@functools.lru_cache(maxsize=1)
def cpu_matmul_rate() -> float:
    """float32 FLOP/s of a 2048^3 matmul on this CPU, measured once per process."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 2048**3 / (time.perf_counter() - t)


def autocast(device, amp):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def time_steps(model, batches, device, amp, optimizer, warmup=2):
    """Seconds per batch over `batches` (a list of (input_ids, attention_mask)), after warmup."""
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    def step(ids, mask):
        labels = torch.zeros(ids.shape[0], dtype=torch.long, device=device)
        with autocast(device, amp):
            loss = model(
                input_ids=ids, attention_mask=mask, start_positions=labels, end_positions=labels
            ).loss
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for ids, mask in batches[:warmup]:
        step(ids, mask)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for ids, mask in batches[warmup:]:
        step(ids, mask)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / max(1, len(batches) - warmup)


def random_batch(batch, seq, device, vocab):
    return (
        torch.randint(5, vocab, (batch, seq), device=device),
        torch.ones(batch, seq, dtype=torch.long, device=device),
    )


def cmd_train_step(args, device):
    seq = getattr(args, "seq", 384)
    model, config = build_model(args.shape, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batches = [
        random_batch(args.batch, seq, device, config.vocab_size) for _ in range(args.steps + 2)
    ]
    seconds = time_steps(model, batches, device, args.amp, optimizer)
    peak, peak_note = peak_flops(device, args.amp)
    achieved = args.batch * flops_per_sequence(config, seq) / seconds
    return {
        "device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
        "shape": args.shape,
        "seq_len": seq,
        "batch": args.batch,
        "amp": args.amp,
        "examples_per_s": round(args.batch / seconds, 3),
        "tokens_per_s": round(args.batch * seq / seconds, 1),
        "mfu": round(achieved / peak, 4) if peak == peak else None,
        "achieved_tflops": round(achieved / 1e12, 3),
        "peak": peak_note,
        "peak_mem_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if device.type == "cuda"
        else None,
        "attention": config._attn_implementation,
    }


def cmd_eval_step(args, device):
    """Validation throughput: forward passes under torch.inference_mode and autocast, at each batch
    size in args.batches, full-length sequences; examples/s and (on a GPU) peak memory per size."""
    seq = getattr(args, "seq", 384)
    model, config = build_model(args.shape, device)
    model.eval()
    out = {
        "device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
        "shape": args.shape,
        "seq_len": seq,
        "amp": args.amp,
        "by_batch": {},
    }
    for batch in args.batches:
        row = {}
        try:
            batches = [
                random_batch(batch, seq, device, config.vocab_size) for _ in range(args.steps + 1)
            ]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with torch.inference_mode(), autocast(device, args.amp):
                model(input_ids=batches[0][0], attention_mask=batches[0][1])  # warmup
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                for ids, mask in batches[1:]:
                    model(input_ids=ids, attention_mask=mask)
                if device.type == "cuda":
                    torch.cuda.synchronize()
            row["examples_per_s"] = round(batch * args.steps / (time.perf_counter() - t), 2)
            if device.type == "cuda":
                row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        except RuntimeError as err:  # out of memory at a large batch: record it, try the next size
            row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        out["by_batch"][str(batch)] = row
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def cmd_validation_batch(args, device):
    """Validation examples/s at a cluster config's per-slot training batch and at its
    per_slot_validation_batch_size (eval_step's forward passes under torch.inference_mode)."""
    config = settings.load_config(args.config)
    slots = config["resources"]["slots_per_trial"]
    hp = settings.hyperparameters(config["hyperparameters"], slots=slots)
    train, validation = hp["global_batch_size"] // slots, hp["per_slot_validation_batch_size"]
    args.batches = sorted({train, validation})
    out = cmd_eval_step(args, device)
    rates = {b: out["by_batch"][str(b)].get("examples_per_s") for b in (train, validation)}
    out.update(
        config=args.config,
        training_batch=train,
        validation_batch=validation,
        speedup=round(rates[validation] / rates[train], 2) if all(rates.values()) else None,
    )
    return out


def squad_lengths(n_questions=3000, seed=5):
    """Feature lengths of generated SQuAD 2.0-format data at max_seq_length 384 with the tiny tokenizer,
    its paragraphs padded with 3 to 19 filler sentences so that the lengths are SQuAD-shaped: mean
    about 175 tokens (pad-to-384 efficiency about 0.45, as for SQuAD 2.0), 5th-95th percentile
    about 94-251 tokens. (make demo's data has shorter paragraphs.)"""
    import tempfile

    import make_squad_data
    import make_tiny_model

    import data
    import models

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = models.load_tokenizer(make_tiny_model.build(os.path.join(tmp, "tiny")))
        path = os.path.join(tmp, "train.json")
        with open(path, "w") as f:
            json.dump(
                make_squad_data.make_dataset(n_questions, seed, 1, "bench", filler=(3, 19)), f
            )
        examples = data.read_squad(path, "train")
        return data.featurize(examples, tokenizer, data.FeatureSpec(384, 128, 64), training=True)[
            "lengths"
        ]


def spread_pairs(batches, key, rounds):
    """2 x rounds batches evenly spaced over the quantiles of `key`, paired low with high (round r:
    quantiles r and 2 rounds - 1 - r), so each round's pair is about an average pair."""
    order = sorted(batches, key=key)
    picks = [order[int((k + 0.5) * len(order) / (2 * rounds))] for k in range(2 * rounds)]
    return [(picks[r], picks[-1 - r]) for r in range(rounds)]


def spread(values):
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return {
        "median": round(float(q50), 3),
        "min": round(float(np.min(values)), 3),
        "max": round(float(np.max(values)), 3),
        "q25": round(float(q25), 3),
        "q75": round(float(q75), 3),
        "iqr": round(float(q75 - q25), 3),
    }


def cmd_bucketing(args, device):
    """Pad-to-384 against length-bucketed steps, interleaved so that other jobs on the machine hit
    both alike: each of --steps rounds runs padded, bucketed, bucketed, padded (a linear drift in
    speed cancels), and the result is the median over rounds of bucketed / padded, with its spread.
    On a CPU one thread: with two, every parallel operation waits for the thread other jobs delayed,
    which costs the short bucketed steps proportionally more and biases the ratio toward 1."""
    import samplers

    if device.type == "cpu":
        torch.set_num_threads(1)
    lengths = squad_lengths().astype(np.int64)
    model, config = build_model(args.shape, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rng = np.random.default_rng(0)
    rounds = args.steps

    def step(idx, pad_to_max):
        """Seconds of one training step on the features `idx`, its real and its computed tokens."""
        lens = lengths[idx]
        width = 384 if pad_to_max else int(np.ceil(lens.max() / 8) * 8)
        mask = torch.from_numpy((np.arange(width)[None, :] < lens[:, None]).astype(np.int64)).to(
            device
        )
        ids = torch.randint(5, config.vocab_size, (len(idx), width), device=device)
        seconds = time_steps(model, [(ids, mask)], device, args.amp, optimizer, warmup=0)
        return seconds, int(lens.sum()), len(idx) * width

    # Timed batches spread over the range: padded ones by real tokens, bucketed ones by width.
    random_batches = [
        rng.choice(len(lengths), args.batch, replace=False) for _ in range(max(200, 2 * rounds))
    ]
    bucketed = [
        np.array(b)
        for b in samplers.LengthBucketBatchSampler(lengths, args.batch, seed=0)
        if len(b) == args.batch
    ]
    padded_pairs = spread_pairs(random_batches, lambda b: lengths[b].sum(), rounds)
    bucket_pairs = spread_pairs(bucketed, lambda b: lengths[b].max(), rounds)
    # Padding efficiency over a whole epoch, not only the timed batches.
    eff_epoch = lengths.sum() / sum(
        len(b) * np.ceil(lengths[b].max() / 8) * 8
        for b in samplers.LengthBucketBatchSampler(lengths, args.batch, seed=1)
    )

    for p, b in zip(padded_pairs[0], bucket_pairs[0]):  # warmup: 2 steps of each, not timed
        step(p, True)
        step(b, False)
    per_round = []  # rounds x (padded, bucketed) x (seconds, real tokens, computed tokens), 2 steps each
    for (p1, p2), (b1, b2) in zip(padded_pairs, bucket_pairs):
        p, b, b_, p_ = step(p1, True), step(b1, False), step(b2, False), step(p2, True)
        per_round.append([np.add(p, p_), np.add(b, b_)])
    per_round = np.array(per_round, dtype=np.float64)
    examples_per_s = 2 * args.batch / per_round[:, :, 0]
    tokens_per_s = per_round[:, :, 1] / per_round[:, :, 0]
    efficiency = per_round[:, :, 1].sum(0) / per_round[:, :, 2].sum(0)
    return {
        "device": "cpu" if device.type == "cpu" else torch.cuda.get_device_name(device),
        "shape": args.shape,
        "batch": args.batch,
        "amp": args.amp,
        "features": int(len(lengths)),
        "mean_feature_length": round(float(lengths.mean()), 1),
        "rounds": rounds,
        "round_order": "padded, bucketed, bucketed, padded",
        "torch_threads": torch.get_num_threads(),
        "speedup_examples_per_s": spread(examples_per_s[:, 1] / examples_per_s[:, 0]),
        "speedup_tokens_per_s": spread(tokens_per_s[:, 1] / tokens_per_s[:, 0]),
        "padded_examples_per_s": round(float(np.median(examples_per_s[:, 0])), 3),
        "bucketed_examples_per_s": round(float(np.median(examples_per_s[:, 1])), 3),
        "padded_tokens_per_s": round(float(np.median(tokens_per_s[:, 0])), 1),
        "bucketed_tokens_per_s": round(float(np.median(tokens_per_s[:, 1])), 1),
        "padding_efficiency_padded": round(float(efficiency[0]), 3),
        "padding_efficiency_bucketed": round(float(efficiency[1]), 3),
        "padding_efficiency_bucketed_epoch": round(float(eff_epoch), 3),
    }


def cmd_postprocess(args, _device):
    import make_squad_data

    import postprocess
    import squad_eval

    rng = np.random.default_rng(0)
    dataset = make_squad_data.make_dataset(args.questions, 3, 3, "dev")
    qas = [(qa, p["context"]) for a in dataset["data"] for p in a["paragraphs"] for qa in p["qas"]]
    # SQuAD-shaped windows: about 5% of questions have a second window.
    example_index = np.repeat(np.arange(len(qas)), np.where(rng.random(len(qas)) < 0.05, 2, 1))
    n, width = len(example_index), 384
    offsets = np.full((n, width, 2), -1, dtype=np.int32)
    for f, e in enumerate(example_index):
        context = qas[e][1]
        words = np.array(
            [m.span() for m in re.finditer(r"[^ ]+", context)][: width - 30], dtype=np.int32
        )
        offsets[f, 20 : 20 + len(words)] = words
    start = rng.normal(size=(n, width)).astype(np.float32)
    end = rng.normal(size=(n, width)).astype(np.float32)
    t = time.perf_counter()
    predictions, nbest, null_odds = postprocess.postprocess(
        [qa["id"] for qa, _ in qas], [c for _, c in qas], example_index, offsets, start, end
    )
    metrics = squad_eval.evaluate(dataset["data"], predictions, null_odds, 0.0)
    seconds = time.perf_counter() - t
    return {
        "questions": len(qas),
        "features": n,
        "seconds": round(seconds, 3),
        "f1_of_random_logits": round(metrics["f1"], 2),
    }


def cmd_eval_traffic(args, device):
    """Bytes sent per validation of a SQuAD 2.0 dev-sized set (11,873 generated questions with
    SQuAD-shaped lengths, max_seq_length 384, 2 features per slot per batch as in the 8- and 64-GPU
    configs). Before: Determined's reducer allgathers each rank's logits (float32 start and end per
    token, int64 feature index): the chief gathers them and sends every worker all the others'. Now:
    each rank turns its own questions' logits into answers; only those (predictions, n-best lists,
    null odds as JSON) go, to the chief alone. Random logits: n-best lists are full, as in training."""
    import tempfile

    import make_squad_data
    import make_tiny_model

    import cache
    import data
    import evaluation
    import models
    import samplers

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = models.load_tokenizer(make_tiny_model.build(os.path.join(tmp, "tiny")))
        path = os.path.join(tmp, "dev.json")
        with open(path, "w") as f:
            json.dump(make_squad_data.make_dataset(11873, 7, 3, "dev", filler=(3, 19)), f)
        examples = data.read_squad(path, "validation")
        arrays = data.featurize(examples, tokenizer, data.FeatureSpec(384, 128, 64), training=False)
    features = cache.Features(
        arrays, {}, examples.ids, [examples.contexts[c] for c in examples.context_index]
    )
    rng = np.random.default_rng(0)
    start, end = (rng.normal(size=arrays["input_ids"].shape).astype(np.float32) for _ in range(2))
    hp = settings.hyperparameters({})
    out = {"questions": len(examples), "features": len(features)}
    for ranks in (8, 64):
        sampler = samplers.QuestionShardedBatchSampler(
            arrays["lengths"], arrays["example_index"], 2, ranks
        )
        batches = list(iter(sampler))
        logits = [
            sum(
                len(b) * (8 + 2 * 4 * int(np.ceil(arrays["lengths"][b].max() / 8) * 8))
                for b in batches[r::ranks]
            )
            for r in range(ranks)
        ]
        answers = []
        for r in range(ranks):
            owned = sampler.owned(r)
            evaluator = evaluation.SquadEvaluator(features, path, hp, owned)
            answers.append(
                len(json.dumps(evaluator.answers(owned, start[owned], end[owned])).encode())
            )
        out[f"{ranks}_ranks"] = {
            "before_bytes_chief_sends": (ranks - 1) * sum(logits),
            "before_bytes_each_rank_receives": sum(logits) - min(logits),
            "after_bytes_chief_receives": sum(answers[1:]),
            "after_bytes_each_worker_sends": max(answers[1:]),
        }
    return out


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command",
        choices=[
            "train_step",
            "eval_step",
            "validation_batch",
            "bucketing",
            "postprocess",
            "eval_traffic",
        ],
    )
    parser.add_argument(
        "--config",
        default=os.path.join(ROOT, "configs", "const.yaml"),
        help="validation_batch: the config whose training and validation batches are compared",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument(
        "--batches", default="2,8,32", help="eval_step: batch sizes, comma-separated"
    )
    parser.add_argument(
        "--shape", help="albert-xxlarge-v2 (GPU default) or albert-xxlarge-v2/K (CPU default K=8)"
    )
    parser.add_argument("--amp", choices=settings.HPARAMS["amp"].kind, default=None)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--questions", type=int, default=12000)
    args = parser.parse_args()
    for flag in ("batch", "steps", "questions"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} {getattr(args, flag)}: give 1 or more")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        args.batches = [int(b) for b in args.batches.split(",")]
        assert all(b >= 1 for b in args.batches)
    except (ValueError, AssertionError):
        parser.error(
            f"--batches {args.batches}: give batch sizes >= 1 separated by commas, e.g. 2,8,32"
        )
    args.shape = args.shape or (
        "albert-xxlarge-v2" if device.type == "cuda" else "albert-xxlarge-v2/8"
    )
    args.amp = args.amp or ("bf16" if device.type == "cuda" else "none")
    args.batch = args.batch or (32 if device.type == "cuda" else 8)
    command = {
        "train_step": cmd_train_step,
        "eval_step": cmd_eval_step,
        "validation_batch": cmd_validation_batch,
        "bucketing": cmd_bucketing,
        "postprocess": cmd_postprocess,
        "eval_traffic": cmd_eval_traffic,
    }[args.command]
    result = command(args, device)
    if device.type == "cpu" and args.command in (
        "train_step",
        "eval_step",
        "validation_batch",
        "bucketing",
    ):
        result["note"] = f"CPU run: shape {args.shape}, " + (
            "fp32" if args.amp == "none" else f"CPU autocast {args.amp}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
