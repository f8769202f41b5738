"""The GPU check's CPU smoke path and its refusal without a GPU, the MFU peak table, and the ZeRO
plan (torch's own partitioning called without a process group) with the decision it supports."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))

import train_bench  # noqa: E402
import zero_plan  # noqa: E402


def run_check(*args, **env):
    return subprocess.run(
        [os.path.join(ROOT, "bench", "gpu_check.sh"), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_gpu_check_cpu_smoke_reports_every_substep(tiny_model):
    proc = run_check("--cpu-smoke", TINY_ALBERT_DIR=tiny_model)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["mode"] == "cpu-smoke" and result["failed"] == []
    assert (result["per_slot_batch"], result["shape"]) == (2, "tiny")  # const.yaml's per-slot batch
    for amp in ("bf16", "fp16"):
        step = result[f"train_step_{amp}"]
        assert step["ok"] and step["amp"] == amp and step["examples_per_s"] > 0
        assert {"mfu", "peak_mem_gb", "achieved_tflops", "peak"} <= set(step)
        trial = result[f"trial_{amp}"]
        assert trial["ok"] and trial["questions"] == 40 and 0 <= trial["f1"] <= 100, trial
        assert any(f"precision: {amp} on cpu" in line for line in trial["precision_log"]), trial
    validation = result["validation"]
    assert validation["ok"] and set(validation["by_batch"]) == {"2", "8"}
    assert all(row["examples_per_s"] > 0 for row in validation["by_batch"].values())


def test_gpu_check_without_a_gpu_fails_loudly():
    proc = run_check(CUDA_VISIBLE_DEVICES="", GPU_CHECK_CPU_SMOKE="0")
    assert proc.returncode == 2
    assert (
        proc.stderr.startswith("error: ")
        and "CUDA GPU" in proc.stderr
        and "--cpu-smoke" in proc.stderr
    )
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "name, amp, tflops",
    [
        ("NVIDIA H200", "bf16", 989.0),
        ("NVIDIA H100 80GB HBM3", "bf16", 989.0),
        ("NVIDIA H100 PCIe", "fp16", 756.0),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
        ("NVIDIA A10G", "bf16", 70.0),
        ("NVIDIA L4", "bf16", 121.0),
        ("NVIDIA L40S", "bf16", 362.0),
        ("Tesla T4", "fp16", 65.0),
        ("Tesla T4", "bf16", None),
        ("Tesla V100-SXM2-16GB", "fp16", 125.0),
        ("Tesla V100-PCIE-32GB", "fp16", 112.0),
        ("Tesla V100-SXM2-32GB", "bf16", None),
        ("NVIDIA GeForce RTX 4090", "bf16", None),
    ],
)
def test_mfu_peak_table(name, amp, tflops):
    found, source = train_bench.gpu_peak(name, amp)
    assert found == tflops and name in source


def test_zero_partition_is_torchs_greedy_rule():
    # Largest first, each to the rank holding the fewest elements so far (ties: the lowest rank).
    tensors = [torch.empty(n, device="meta") for n in (3, 10, 2, 7, 5)]
    owned = zero_plan.zero_partition([{"params": tensors}], 2)
    assert [[t.numel() for t in ts] for ts in owned] == [[10, 3], [7, 5, 2]]
    # Several groups share the running sizes, as in ZeroRedundancyOptimizer.
    groups = [
        {"params": [torch.empty(8, device="meta")]},
        {"params": [torch.empty(4, device="meta")] * 1},
    ]
    assert [[t.numel() for t in ts] for ts in zero_plan.zero_partition(groups, 3)] == [[8], [4], []]


def test_zero_plan_for_xxlarge():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "zero_plan.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (
        plan["model"]["tensors"] == 25 and plan["model"]["largest_tensor_elements"] == 4096 * 16384
    )
    for optimizer in ("adamw", "radam"):
        p = plan["plans"][optimizer]
        # fp32 exp_avg and exp_avg_sq per element.
        assert p["unsharded_state_gb_per_rank"] == pytest.approx(
            8 * plan["model"]["parameters"] / 1e9, abs=1e-4
        )
        assert p["64_ranks"]["ranks_holding_nothing"] == 64 - 25
        for ranks in ("8_ranks", "64_ranks"):
            assert p[ranks]["state_gb_max"] == pytest.approx(8 * 4096 * 16384 / 1e9, abs=1e-4)
            assert p[ranks]["zero_broadcasts_per_step"] == 25
    # The decision the figures support: no shipped cluster config shards the state.
    assert all(c["zero_optimizer"] is False for c in plan["configs"].values())
