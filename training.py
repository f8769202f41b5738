"""The parts of a training step: the optimizer, the learning-rate schedule, the loss and the
numeric precision of the forward passes."""

import contextlib
import logging
from typing import Any, Dict

import torch
from determined import pytorch
from torch.distributed.optim import ZeroRedundancyOptimizer

logger = logging.getLogger("training")


def linear_warmup_decay(warmup_steps: int, total_steps: int):
    """LR multiplier per optimizer step: 0 → 1 over warmup, then linearly to 0 at total_steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def build_optimizer(model: torch.nn.Module, hp: Dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW or RAdam; no weight decay on biases and normalization weights."""
    no_decay = {
        id(p)
        for m in model.modules()
        if "Norm" in type(m).__name__
        for p in m.parameters(recurse=False)
    }
    no_decay |= {id(p) for name, p in model.named_parameters() if name.endswith("bias")}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {
            "params": [p for p in params if id(p) not in no_decay],
            "weight_decay": hp["weight_decay"],
        },
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]
    name = hp["optimizer"].lower()
    if name == "adamw":
        cls, kwargs = torch.optim.AdamW, {}
    elif name == "radam":
        # decoupled_weight_decay: weight decay as in AdamW rather than added to the gradient.
        cls, kwargs = torch.optim.RAdam, {"decoupled_weight_decay": True}
    else:
        raise AssertionError(hp["optimizer"])  # settings.py allows only these
    kwargs.update(lr=hp["learning_rate"], eps=hp["adam_epsilon"])
    if (
        hp.get("zero_optimizer")
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    ):
        # Each rank keeps the optimizer state of its shard of the parameters only.
        logger.info(
            "%s state sharded across %d ranks (ZeroRedundancyOptimizer)",
            cls.__name__,
            torch.distributed.get_world_size(),
        )
        return ZeroRedundancyOptimizer(groups, optimizer_class=cls, **kwargs)
    return cls(groups, **kwargs)


def qa_loss(
    start_logits, end_logits, start_positions, end_positions, attention_mask
) -> torch.Tensor:
    """Mean of the start and end cross-entropies with padding positions masked out, so the loss of
    a feature does not depend on how far its batch is padded (bucketed, pad-to-max, or split
    across ranks all train the same)."""
    pad = attention_mask == 0
    start = start_logits.float().masked_fill(pad, -1e4)
    end = end_logits.float().masked_fill(pad, -1e4)
    return (
        torch.nn.functional.cross_entropy(start, start_positions)
        + torch.nn.functional.cross_entropy(end, end_positions)
    ) / 2


def precision(amp: str, context: pytorch.PyTorchTrialContext):
    """A context manager factory for the forward passes: bf16 autocast on GPUs that support it,
    fp16 through Determined's automatic mixed precision (autocast plus a gradient scaler it steps
    and unscales before clipping), fp32 on a CPU or with amp: none."""
    if amp == "none" or not torch.cuda.is_available():
        if amp != "none":
            logger.info("amp: %s requested but no GPU: training in fp32", amp)
        return contextlib.nullcontext
    if amp == "bf16" and torch.cuda.is_bf16_supported():
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    logger.info(
        "amp: fp16 with a gradient scaler%s", "" if amp == "fp16" else " (this GPU has no bf16)"
    )
    context.experimental.use_amp()  # Determined wraps the model's forward in autocast and scales the loss
    return contextlib.nullcontext
