"""The GPU check: what no CPU test can run, in one command on one GPU, in a few minutes. Run it
through bench/gpu_check.sh; it prints one JSON object on its last line.

    bench/gpu_check.sh               # on a machine with a CUDA GPU; exits 2 without one
    bench/gpu_check.sh --cpu-smoke   # the same code at tiny shapes on the CPU (or GPU_CHECK_CPU_SMOKE=1)

Sub-steps (one failing is recorded in the JSON with its error and does not stop the others; the
exit status is 1 when any failed):
1. train_step: the albert-xxlarge-v2-shaped train step (bench/train_bench.py) in bf16 and in fp16,
   at const.yaml's per-slot batch and max_seq_length: sequences/s, MFU against the GPU's dense
   peak (null where unknown), peak memory.
2. trial: the tiny model's trial through model_def.py for 20 batches and a small validation, with
   `amp: fp16` and with `amp: bf16` (a config derived from configs/local_tiny.yaml).
3. validation: forward passes of the xxlarge shape under torch.inference_mode at a few batch sizes
   (examples/s, peak memory), in the precision the trial would use on this GPU.
"""

import argparse
import datetime
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import types

import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import train_bench  # noqa: E402


def slot_shape():
    """const.yaml's per-slot batch and max_seq_length: what one GPU of the 1-GPU config trains on."""
    with open(os.path.join(ROOT, "configs", "const.yaml")) as f:
        config = yaml.safe_load(f)
    hp = config["hyperparameters"]
    return hp["global_batch_size"] // config["resources"]["slots_per_trial"], hp["max_seq_length"]


def substep(results, failed, name, fn):
    """Run one sub-step; an exception becomes {"ok": false, "error": ...} and the check goes on."""
    start = time.perf_counter()
    try:
        out = {"ok": True, **fn()}
    except Exception as err:  # noqa: BLE001 - every failure is reported, none stops the check
        out = {
            "ok": False,
            "error": f"{type(err).__name__}: {str(err)[:500]}",
            "where": traceback.format_exc().strip().splitlines()[-3:],
        }
    out["seconds"] = round(time.perf_counter() - start, 1)
    if not out.get("ok", False):
        failed.append(name)
    results[name] = out
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def trial_config(workdir, amp, smoke):
    """A config derived from configs/local_tiny.yaml: the tiny model, generated data, a fixed number
    of batches and a small validation."""
    import make_squad_data
    import make_tiny_model

    model = os.environ.get("TINY_ALBERT_DIR") or os.path.join(workdir, "tiny-albert")
    if not os.path.isdir(model):
        make_tiny_model.build(model)
    files = []
    for split, n, seed in (("train", 200 if smoke else 1000, 1), ("dev", 40 if smoke else 200, 2)):
        path = os.path.join(workdir, f"{split}-v2.0.json")
        if not os.path.exists(path):
            with open(path, "w") as f:
                json.dump(make_squad_data.make_dataset(n, seed, 1, split), f)
        files.append(path)
    with open(os.path.join(ROOT, "configs", "local_tiny.yaml")) as f:
        config = yaml.safe_load(f)
    config["data"].update(
        train_file=files[0], validation_file=files[1], cache_dir=os.path.join(workdir, "cache")
    )
    config["hyperparameters"].update(
        pretrained_model_name=model,
        amp=amp,
        max_batches=2 if smoke else 20,
        reporting_period_batches=1 if smoke else 10,
        export_hf_model=False,
        **({"global_batch_size": 8, "max_seq_length": 128, "doc_stride": 32} if smoke else {}),
    )
    path = os.path.join(workdir, f"tiny_{amp}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def start_trial(workdir, amp, smoke):
    config = trial_config(workdir, amp, smoke)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"OMP_NUM_THREADS": "1"} if smoke else {})}
    log = open(os.path.join(workdir, f"trial_{amp}.log"), "w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, "model_def.py"),
            "--config",
            config,
            "--output-dir",
            os.path.join(workdir, f"out_{amp}"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    return proc, log, time.perf_counter()


def finish_trial(started, timeout):
    """The trial's metrics, or an error with the end of its log."""
    proc, log, t0 = started
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as err:
        proc.kill()
        stdout, _ = proc.communicate()
        raise RuntimeError(f"model_def.py ran past {timeout} s") from err
    log.seek(0)
    stderr = log.read()
    log.close()
    precision = [
        line.split(" INFO ", 1)[-1]
        for line in stderr.splitlines()
        if "amp:" in line or "precision" in line
    ]
    if proc.returncode != 0:
        tail = [line for line in stderr.strip().splitlines() if line.strip()][-6:]
        raise RuntimeError(f"model_def.py exited {proc.returncode}: " + " | ".join(tail))
    metrics = json.loads(stdout.strip().splitlines()[-1])
    return {
        "f1": round(metrics["f1"], 2),
        "exact": round(metrics["exact"], 2),
        "questions": metrics["total"],
        "wall_s": round(time.perf_counter() - t0, 1),
        "precision_log": precision[:3],
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        default=os.environ.get("GPU_CHECK_CPU_SMOKE") == "1",
        help="run the same code at tiny shapes on the CPU (for the test suite)",
    )
    args = parser.parse_args()
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print(
            "error: bench/gpu_check.sh needs a CUDA GPU and torch sees none "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); run it on a GPU machine, "
            "or pass --cpu-smoke to run the same code at tiny shapes on the CPU",
            file=sys.stderr,
        )
        sys.exit(2)
    device = torch.device("cpu" if smoke else "cuda")
    batch, seq = slot_shape()
    name = "cpu" if smoke else torch.cuda.get_device_name(device)
    bf16 = not smoke and torch.cuda.is_bf16_supported()
    # The trial's own rule (training.Precision): bf16 where supported, else fp16.
    eval_amp = "bf16" if smoke or bf16 else "fp16"
    shape = "tiny" if smoke else "albert-xxlarge-v2"
    result = {
        "mode": "cpu-smoke" if smoke else "gpu",
        "device": name,
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu_memory_gb": None
        if smoke
        else round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1),
        "bf16_supported": bf16,
        "shape": shape,
        "per_slot_batch": batch,
        "seq_len": 64 if smoke else seq,
    }
    failed = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        # In the smoke run the two trials run beside the in-process steps (2 cores, a short test);
        # on a GPU one at a time, after them, so that each step has the GPU to itself.
        trials = (
            {amp: start_trial(workdir, amp, smoke) for amp in ("fp16", "bf16")} if smoke else {}
        )
        steps = types.SimpleNamespace(
            shape=shape, batch=batch, seq=result["seq_len"], steps=1 if smoke else 6
        )
        for amp in ("bf16", "fp16"):
            substep(
                result,
                failed,
                f"train_step_{amp}",
                lambda amp=amp: train_bench.cmd_train_step(
                    types.SimpleNamespace(**vars(steps), amp=amp), device
                ),
            )
        evals = types.SimpleNamespace(
            shape=shape,
            seq=result["seq_len"],
            steps=1 if smoke else 5,
            amp=eval_amp,
            batches=[2, 8] if smoke else [2, 16, 64, 128],
        )
        substep(result, failed, "validation", lambda: train_bench.cmd_eval_step(evals, device))
        for amp in ("fp16", "bf16"):
            substep(
                result,
                failed,
                f"trial_{amp}",
                # 3 minutes each on a GPU keeps the whole check under 8 minutes.
                lambda amp=amp: finish_trial(
                    trials.get(amp) or start_trial(workdir, amp, smoke), 600 if smoke else 180
                ),
            )
    result["failed"] = failed
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result), flush=True)
    if failed:
        print(
            f"error: {len(failed)} sub-step(s) failed: {', '.join(failed)} (their errors are in the JSON above)",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
