"""Does sharding the optimizer state (ZeroRedundancyOptimizer) pay for ALBERT-xxlarge-v2? Computed
from the model's parameter shapes, no weights and no GPU: prints one JSON object.

    python bench/zero_plan.py

What it computes, for the optimizer each cluster config names (AdamW, RAdam) at 8 and 64 ranks:
- each rank's optimizer state under torch's own partitioning: the installed torch's
  ZeroRedundancyOptimizer._partition_parameters is called on an instance made without a process
  group (the method reads only `param_groups`, `world_size` and its cache), on the parameter groups
  training.build_optimizer makes; the state's bytes are those the real optimizer class allocates
  after one step on the meta device (exp_avg and exp_avg_sq: fp32 per element; step: a 4-byte CPU
  scalar per tensor);
- the communication ZeRO adds: every optimizer step, each parameter is broadcast from the rank that
  owns it (one broadcast per tensor, after the backward pass, not overlapped with it), on top of
  DDP's gradient all-reduce (ring: 2 (N-1)/N of the gradient bytes per rank); and before every
  checkpoint or validation, consolidate_state_dict sends each rank's serialized state to every rank
  (torch uses broadcast, not gather), each receiver loading it onto its GPU before dropping it;
- the same numbers against the GPU memory of the original example's GPUs (V100 16/32 GB, A100
  40/80 GB): parameters, gradients and state are computed; activations and autocast's bf16 weight
  copies are estimates and are labelled so.
"""

import json
import os
import sys

import torch
import yaml
from torch.distributed.optim import ZeroRedundancyOptimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train_bench  # noqa: E402

import training  # noqa: E402

GB = 1e9
# albert-xxlarge-v2's config.json values (the shapes are all this needs): train_bench's shape and
# the rest of the file's shape-setting keys.
XXLARGE_V2 = dict(
    train_bench.XXLARGE,
    num_hidden_groups=1,
    inner_group_num=1,
    max_position_embeddings=512,
    type_vocab_size=2,
)
CONFIGS = ("distributed_8gpu.yaml", "distributed_64gpu.yaml", "search_asha.yaml")
GPUS_GB = {"V100 16GB": 16, "V100 32GB": 32, "A100 40GB": 40, "A100 80GB": 80}


def meta_model():
    """AlbertForQuestionAnswering with xxlarge-v2's shapes on the meta device: shapes, no memory."""
    from transformers import AlbertConfig, AlbertForQuestionAnswering

    with torch.device("meta"):
        return AlbertForQuestionAnswering(AlbertConfig(**XXLARGE_V2)), XXLARGE_V2


def zero_partition(param_groups, world_size):
    """Each rank's parameters under torch's own rule (largest tensor first, to the rank holding the
    fewest elements so far), by calling the installed torch's method itself."""
    shell = ZeroRedundancyOptimizer.__new__(ZeroRedundancyOptimizer)
    shell.param_groups, shell.world_size, shell._partition_parameters_cache = (
        param_groups,
        world_size,
        [],
    )
    return [
        [p for group in rank_groups for p in group["params"]]
        for rank_groups in shell._partition_parameters()
    ]


def state_bytes(optimizer):
    """{parameter: (bytes on the parameters' device, bytes on the CPU)} of the optimizer's state
    after one step with meta gradients (what the optimizer class really allocates)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = torch.empty_like(p)
    optimizer.step()
    out = {}
    for p, state in optimizer.state.items():
        tensors = [t for t in state.values() if torch.is_tensor(t)]
        out[p] = (
            sum(t.numel() * t.element_size() for t in tensors if t.device.type == "meta"),
            sum(t.numel() * t.element_size() for t in tensors if t.device.type == "cpu"),
        )
    return out


def plan(model, optimizer_name, ranks):
    hp = {
        "optimizer": optimizer_name,
        "learning_rate": 1e-4,
        "adam_epsilon": 1e-8,
        "weight_decay": 0.0,
        "zero_optimizer": False,
    }
    optimizer = training.build_optimizer(model, hp)
    state = state_bytes(optimizer)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    full_state = sum(device for device, _ in state.values())
    full_step = sum(cpu for _, cpu in state.values())
    out = {
        "optimizer": type(optimizer).__name__,
        "unsharded_state_gb_per_rank": round(full_state / GB, 4),
        "step_counters_cpu_bytes": full_step,
    }
    for n in ranks:
        owned = zero_partition(optimizer.param_groups, n)
        rank_state = [sum(state[p][0] for p in ps) for ps in owned]
        rank_params = [sum(p.numel() * p.element_size() for p in ps) for ps in owned]
        largest_other = [max(s for j, s in enumerate(rank_state) if j != r) for r in range(n)]
        out[f"{n}_ranks"] = {
            "state_gb_max": round(max(rank_state) / GB, 4),
            "state_gb_min": round(min(rank_state) / GB, 4),
            "ranks_holding_nothing": sum(1 for ps in owned if not ps),
            "max_rank_saves_gb": round((full_state - max(rank_state)) / GB, 4),
            "max_over_unsharded": round(max(rank_state) / full_state, 4),
            "tensors_per_rank_max": max(len(ps) for ps in owned),
            # Per optimizer step: DDP's all-reduce of fp32 gradients (ring) and ZeRO's broadcasts.
            "allreduce_gb_per_rank_per_step": round(2 * (n - 1) / n * param_bytes / GB, 4),
            "zero_broadcast_gb_received_per_rank_per_step": {
                "max": round((param_bytes - min(rank_params)) / GB, 4),
                "min": round((param_bytes - max(rank_params)) / GB, 4),
            },
            "zero_broadcasts_per_step": len(params),
            "zero_extra_over_allreduce": round(
                (param_bytes - min(rank_params)) / (2 * (n - 1) / n * param_bytes), 3
            ),
            # consolidate_state_dict: every rank receives every other rank's state; a receiver holds the
            # serialized bytes and the loaded tensors on its GPU at once (one source rank at a time).
            "consolidation_gb_received_per_rank": round((full_state - min(rank_state)) / GB, 4),
            "consolidation_peak_state_gb_on_a_rank": round(
                max(s + 2 * o for s, o in zip(rank_state, largest_other)) / GB, 4
            ),
        }
    return out, param_bytes, full_state


def config_summary(name):
    with open(os.path.join(ROOT, "configs", name)) as f:
        config = yaml.safe_load(f)
    hp = config["hyperparameters"]
    agg = hp["aggregation_frequency"]
    aggs = agg["vals"] if isinstance(agg, dict) else [agg]
    slots = config["resources"]["slots_per_trial"]
    periods = [p for p in (hp["validation_period_batches"], hp["checkpoint_period_batches"]) if p]
    return {
        "slots": slots,
        "optimizer": hp["optimizer"],
        "per_slot_batch": hp["global_batch_size"] // slots,
        "aggregation_frequency": aggs,
        "zero_optimizer": hp["zero_optimizer"],
        "consolidation_every_batches": min(periods),
        "optimizer_steps_between_consolidations": [min(periods) // a for a in aggs],
    }


def memory_table(param_bytes, full_state, sharded_max_state, n_params, config):
    """Per-GPU memory of one rank at the configs' per-slot batch 2, max_seq_length 384, bf16 autocast."""
    s, b, h, a, layers = (
        384,
        2,
        config["hidden_size"],
        config["num_attention_heads"],
        config["num_hidden_layers"],
    )
    # Estimate (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"):
    # 16-bit activations saved per layer = s b h (34 + 5 a s / h) bytes; the 5 a s / h term is the
    # attention matrices, which flash / memory-efficient SDPA kernels do not keep.
    act_low = layers * s * b * h * 34
    act_high = layers * s * b * h * (34 + 5 * a * s / h)
    bf16_weights = (
        n_params * 2
    )  # autocast's cached 16-bit copies of the weights during one forward (estimate)
    computed = 2 * param_bytes  # fp32 parameters and fp32 gradients
    rows = {}
    for label, state in (("unsharded", full_state), ("zero_max_rank", sharded_max_state)):
        low = computed + state + bf16_weights + act_low
        high = computed + state + bf16_weights + act_high
        rows[label] = {
            "total_gb_estimate": [round(low / GB, 2), round(high / GB, 2)],
            **{
                f"free_on_{g}_gb_estimate": [round(size - high / GB, 1), round(size - low / GB, 1)]
                for g, size in GPUS_GB.items()
            },
        }
    return {
        "params_fp32_gb": round(param_bytes / GB, 3),
        "grads_fp32_gb": round(param_bytes / GB, 3),
        "adam_state_gb": round(full_state / GB, 3),
        "bf16_weight_copies_gb_estimate": round(bf16_weights / GB, 3),
        "activations_gb_estimate": [round(act_low / GB, 2), round(act_high / GB, 2)],
        "activations_note": "estimate, per-slot batch 2 x 384 tokens, 16-bit: low = flash/memory-efficient "
        "attention, high = attention matrices kept (Korthikanti et al. 2022 formula)",
        "not_counted": "CUDA context, allocator fragmentation, DDP's gradient buckets (about the gradient size)",
        **rows,
    }


def main():
    model, config = meta_model()
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)
    plans = {}
    for name in ("adamw", "radam"):
        plans[name], param_bytes, full_state = plan(model, name, (8, 64))
    largest = max(params, key=lambda p: p.numel())
    out = {
        "model": {
            "shape": "albert-xxlarge-v2 (AlbertForQuestionAnswering, no pooler)",
            "parameters": n_params,
            "tensors": len(params),
            "largest_tensor_elements": largest.numel(),
            "param_bytes_fp32": param_bytes,
        },
        "partition": "torch "
        + torch.__version__
        + ": ZeroRedundancyOptimizer._partition_parameters called on an "
        "instance without a process group, over training.build_optimizer's two groups",
        "plans": plans,
        "configs": {name: config_summary(name) for name in CONFIGS},
        "memory_per_gpu": memory_table(
            param_bytes,
            full_state,
            max(
                plans["adamw"]["8_ranks"]["state_gb_max"],
                plans["adamw"]["64_ranks"]["state_gb_max"],
            )
            * GB,
            n_params,
            config,
        ),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
