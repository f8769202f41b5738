"""The parts of a training step: the optimizer, the learning-rate schedule, the loss and the
numeric precision of the forward passes."""

import contextlib
import logging
from typing import Any, Dict, Optional

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


class Precision:
    """The numeric precision of the training step, the same code on every device: `amp: bf16` or
    `fp16` autocasts the forward passes with `torch.autocast(<the run's device type>)`, so a CPU run
    takes the branch a GPU takes; fp16 also scales the loss with a GradScaler registered through
    Determined (`context.wrap_scaler`: it saves and restores the scaler's state with each
    checkpoint) and unscales the gradients before they are clipped. Not Determined's
    `context.experimental.use_amp()`: its forward hook turns the model's ModelOutput into a plain
    dict. A GPU without bf16 (V100, T4) gets fp16 for `amp: bf16`."""

    def __init__(self, amp: str, context: pytorch.PyTorchTrialContext) -> None:
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype: Optional[torch.dtype] = None
        self.scaler = None
        why = ""
        if amp == "bf16" and self.device == "cuda" and not torch.cuda.is_bf16_supported():
            amp, why = "fp16", " (amp: bf16 asked for, but this GPU has no bf16)"
        if amp == "bf16":
            self.dtype = torch.bfloat16
        elif amp == "fp16":
            self.dtype = torch.float16
            # Before wrap_model, as Determined requires. torch.amp.GradScaler takes the device type
            # in torch 2.3 and later; on a CPU it scales and unscales as on a GPU.
            self.scaler = context.wrap_scaler(torch.amp.GradScaler(self.device))
        self.name = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        logger.info(
            "precision: %s on %s%s%s",
            self.name,
            self.device,
            " with a gradient scaler" if self.scaler else "",
            why,
        )

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=self.dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss) if self.scaler else loss

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Before clipping: the gradients in their true size (once per optimizer step)."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def update(self) -> None:
        """After an optimizer step: grow the scale, or shrink it if the gradients overflowed (then
        the scaler skipped that step)."""
        if self.scaler:
            self.scaler.update()
