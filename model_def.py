"""Fine-tune an extractive-QA model (ALBERT-xxlarge-v2 by default) on SQuAD 2.0 with Determined.

On a cluster (entrypoint `python3 -m determined.launch.torch_distributed python3 model_def.py`) the
hyperparameters and latest checkpoint come from the cluster. Locally the same code reads the same
YAML config:

    python model_def.py --config configs/local_tiny.yaml [--output-dir outputs] [--resume CHECKPOINT]
    torchrun --nproc_per_node 2 model_def.py --config configs/local_tiny_2proc.yaml
"""
import argparse
import contextlib
import importlib
import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch.distributed.optim import ZeroRedundancyOptimizer
from transformers import AutoConfig, AutoModelForQuestionAnswering

import determined as det
from determined import core, pytorch

import data
import postprocess
import qa_pipeline
import settings
import squad_eval

logger = logging.getLogger("model_def")

# Determined 0.38 saves NumPy's RNG state in its checkpoints and restores them with torch.load,
# whose weights-only default (torch >= 2.6) refuses NumPy arrays: without this allowlist no
# checkpoint could be resumed, on a cluster or locally. Only these NumPy types are allowed, under
# both names NumPy's array constructor has had (np.core in NumPy 1, np._core in 2), so checkpoints
# written on an image with NumPy 1 load with NumPy 2 and back. Before torch 2.6 torch.load unpickles
# fully by default (Determined's loads and export.py's alike) and there is nothing to allowlist.
WEIGHTS_ONLY_LOADS = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 6)
if WEIGHTS_ONLY_LOADS:
    _numpy_2 = int(np.__version__.split(".")[0]) >= 2
    _reconstruct = importlib.import_module("numpy._core.multiarray" if _numpy_2 else "numpy.core.multiarray")._reconstruct
    torch.serialization.add_safe_globals([(_reconstruct, f"numpy.{core}.multiarray._reconstruct")
                                          for core in ("core", "_core")]
                                         + [np.ndarray, np.dtype, type(np.dtype(np.uint32))])


def linear_warmup_decay(warmup_steps: int, total_steps: int):
    """LR multiplier per optimizer step: 0 → 1 over warmup, then linearly to 0 at total_steps."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def build_optimizer(model: torch.nn.Module, hp: Dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW or RAdam; no weight decay on biases and normalization weights."""
    no_decay = {id(p) for m in model.modules() if "Norm" in type(m).__name__ for p in m.parameters(recurse=False)}
    no_decay |= {id(p) for name, p in model.named_parameters() if name.endswith("bias")}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in no_decay], "weight_decay": hp["weight_decay"]},
              {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0}]
    name = hp["optimizer"].lower()
    if name == "adamw":
        cls, kwargs = torch.optim.AdamW, {}
    elif name == "radam":
        # decoupled_weight_decay: weight decay as in AdamW rather than added to the gradient.
        cls, kwargs = torch.optim.RAdam, {"decoupled_weight_decay": True}
    else:
        raise AssertionError(hp["optimizer"])  # settings.py allows only these
    kwargs.update(lr=hp["learning_rate"], eps=hp["adam_epsilon"])
    if hp.get("zero_optimizer") and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        # Each rank keeps the optimizer state of its shard of the parameters only.
        logger.info("%s state sharded across %d ranks (ZeroRedundancyOptimizer)", cls.__name__,
                    torch.distributed.get_world_size())
        return ZeroRedundancyOptimizer(groups, optimizer_class=cls, **kwargs)
    return cls(groups, **kwargs)


def qa_loss(start_logits, end_logits, start_positions, end_positions, attention_mask) -> torch.Tensor:
    """Mean of the start and end cross-entropies with padding positions masked out, so the loss of
    a feature does not depend on how far its batch is padded (bucketed, pad-to-max, or split
    across ranks all train the same)."""
    pad = attention_mask == 0
    start = start_logits.float().masked_fill(pad, -1e4)
    end = end_logits.float().masked_fill(pad, -1e4)
    return (torch.nn.functional.cross_entropy(start, start_positions)
            + torch.nn.functional.cross_entropy(end, end_positions)) / 2


def load_model(hp: Dict[str, Any]) -> torch.nn.Module:
    """The QA model through the Auto classes, with PyTorch's fused scaled_dot_product_attention
    where the architecture supports it (ALBERT does)."""
    name = hp["pretrained_model_name"]
    try:
        model = data.load_pretrained_model(name, attn_implementation="sdpa")
    except (ValueError, ImportError) as err:
        logger.warning("%s: no scaled_dot_product_attention support (%s); using eager attention", name, err)
        model = data.load_pretrained_model(name, attn_implementation="eager")
    logger.info("attention implementation: %s", model.config._attn_implementation)
    if hp.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
    return model


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
    logger.info("amp: fp16 with a gradient scaler%s", "" if amp == "fp16" else " (this GPU has no bf16)")
    context.experimental.use_amp()  # Determined wraps the model's forward in autocast and scales the loss
    return contextlib.nullcontext


class SquadEvaluator:
    """Evaluation split by question: each rank post-processes the questions whose features it
    evaluated (data.QuestionShardedBatchSampler); the chief merges the answers, scores them and
    writes the predictions files."""

    def __init__(self, features: data.Features, validation_path: str, hp: Dict[str, Any], owned: np.ndarray):
        self.features, self.validation_path, self.hp, self.owned = features, validation_path, hp, owned
        self.out_dir: Optional[str] = None  # where the next validation writes its files (chief)
        self.step = 0  # the batch the next validation follows
        self.tensorboard = None  # the chief's SummaryWriter factory, for the curves
        self.last_dir: Optional[str] = None
        self.articles: Optional[list] = None  # the validation file's gold answers, read at the first validation

    def answers(self, feature_index: np.ndarray, start_logits: np.ndarray, end_logits: np.ndarray):
        """(predictions, nbest, null_odds) of this rank's questions, from their features' logits
        (features of other ranks' questions, and repeats, are dropped)."""
        if not len(self.owned):
            return {}, {}, {}
        keep = np.isin(feature_index, self.owned)
        feature_index, first = np.unique(feature_index[keep], return_index=True)
        if not np.array_equal(feature_index, self.owned):
            raise RuntimeError(f"validation covered {len(feature_index)} of this rank's {len(self.owned)} features")
        example_index = np.asarray(self.features.arrays["example_index"])[feature_index]
        questions, local = np.unique(example_index, return_inverse=True)
        return postprocess.postprocess(
            [self.features.example_ids[q] for q in questions], [self.features.example_contexts[q] for q in questions],
            local, self.features.arrays["offsets"][feature_index], start_logits[keep][first], end_logits[keep][first],
            n_best_size=self.hp["n_best_size"], max_answer_length=self.hp["max_answer_length"],
            null_score_diff_threshold=self.hp["null_score_diff_threshold"])

    def score(self, predictions: dict, nbest: dict, null_odds: dict) -> Dict[str, Any]:
        """Official metrics of every question's answer; writes the predictions files (chief)."""
        if self.articles is None:
            # The kept questions with all their gold answers; what read_squad skipped as invalid
            # (with skip_invalid_examples) is not scored, however malformed.
            kept = set(self.features.example_ids)
            with open(self.validation_path, encoding="utf-8-sig") as f:
                questions = [qa for a in json.load(f)["data"] if isinstance(a, dict)
                             for p in _list(a.get("paragraphs")) if isinstance(p, dict)
                             for qa in _list(p.get("qas")) if isinstance(qa, dict) and qa.get("id") in kept]
            self.articles = [{"paragraphs": [{"qas": questions}]}]
        metrics = squad_eval.evaluate(self.articles, predictions, null_odds, self.hp["null_score_diff_threshold"],
                                      span_preds=postprocess.best_spans(nbest))
        curves = squad_eval.precision_recall(self.articles, predictions, null_odds)
        metrics.update(squad_eval.pr_metrics(curves))
        if self.out_dir:
            postprocess.write_predictions(self.out_dir, predictions, nbest, null_odds, metrics)
            # The official evaluation's pictures, beside the predictions and in TensorBoard.
            figures = squad_eval.figures(self.articles, null_odds, curves)
            squad_eval.write_figures(self.out_dir, figures)
            logger.info("wrote predictions.json, nbest_predictions.json, null_odds.json, metrics.json and %s to %s",
                        ", ".join(figures), self.out_dir)
            if self.tensorboard is not None:
                writer = self.tensorboard()
                for name, figure in figures.items():
                    writer.add_image(f"squad/{name[:-4]}", squad_eval.figure_rgb(figure), self.step, dataformats="HWC")
                writer.flush()
            self.last_dir = self.out_dir
        return metrics


def _list(value) -> list:
    return value if isinstance(value, list) else []


class LogitsReducer(pytorch.MetricReducer):
    """Keeps the start/end logits of this rank's validation features; at the end each rank turns
    its own questions' logits into answers and only those travel, to the chief, which scores them.
    (Determined's reducers allgather what per_slot_reduce returns: logits sent that way would reach
    every rank, and the chief would post-process every question alone.)"""

    def __init__(self, evaluator: SquadEvaluator, distributed: core.DistributedContext):
        self.evaluator, self.distributed = evaluator, distributed
        self.reset()

    def reset(self) -> None:
        self.parts = []

    def update(self, feature_index: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> None:
        self.parts.append((feature_index.cpu().numpy(), start.float().cpu().numpy(), end.float().cpu().numpy()))

    def per_slot_reduce(self):
        width = max([p[1].shape[1] for p in self.parts], default=1)
        index = np.concatenate([p[0] for p in self.parts] or [np.zeros(0, dtype=np.int64)])
        start, end = (np.concatenate([np.pad(p[k], [(0, 0), (0, width - p[k].shape[1])], constant_values=-1e4)
                                      for p in self.parts] or [np.zeros((0, width), np.float32)]) for k in (1, 2))
        answers = self.evaluator.answers(index, start, end)
        text = json.dumps(answers)  # JSON text, not pickled objects, crosses the process boundary
        logger.info("rank %d answered its %d questions (%d bytes of answers)", self.distributed.rank,
                    len(answers[0]), len(text))
        gathered = self.distributed.gather(text)  # to the chief only
        if gathered is None:
            return None
        merged = [{}, {}, {}]
        for text in gathered:
            for into, part in zip(merged, json.loads(text)):
                into.update(part)
        return self.evaluator.score(*merged)

    def cross_slot_reduce(self, per_slot):
        return next((metrics for metrics in per_slot if metrics is not None), {})


class CheckpointExtras(pytorch.PyTorchCallback):
    """Adds to each checkpoint what makes it usable on its own: the model's Hugging Face config and
    tokenizer and the pipeline code (`hf/`, a few MB; with `export_hf_model` also the weights as
    safetensors, so `transformers.pipeline` loads `hf/` as it loads export.py's directory) and the
    latest validation's predictions."""

    def __init__(self, trial: "SquadTrial"):
        self.trial = trial

    def on_checkpoint_write_end(self, checkpoint_dir: str) -> None:
        hf = os.path.join(checkpoint_dir, "hf")
        model = unwrap(self.trial.model)
        carried = data.squad_settings(self.trial.hp, model.config, self.trial.last_metrics)
        qa_pipeline.save(model, self.trial.tokenizer, carried, hf, weights=self.trial.hp["export_hf_model"])
        last = self.trial.evaluator.last_dir
        if last and os.path.isdir(last):
            shutil.copytree(last, os.path.join(checkpoint_dir, "predictions"), dirs_exist_ok=True)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def checkpoint_model_source(checkpoint_dir: str, hp: Dict[str, Any]) -> str:
    """Where a checkpoint's model config and tokenizer come from: its own `hf/` (CheckpointExtras),
    or, in checkpoints without one, the model training started from."""
    hf = os.path.join(checkpoint_dir, "hf")
    return hf if os.path.isfile(os.path.join(hf, "config.json")) else hp["pretrained_model_name"]


class SquadTrial(pytorch.PyTorchTrial):
    def __init__(self, context: pytorch.PyTorchTrialContext, output_dir: Optional[str] = None) -> None:
        self.context = context
        self.predictions_dir = predictions_root(output_dir)
        if isinstance(context, pytorch.CheckpointLoadContext):
            # Inference needs only the model's settings: a checkpoint written under older rules
            # (say, a period the settings now reject) still loads.
            self.hp = hp = settings.hyperparameters(context.get_hparams(), problems=[])
            # determined.pytorch.load_trial_from_checkpoint_path: the model only, for inference,
            # offline. It imports this file from the checkpoint's code/ (determined/util.py,
            # write_user_code), so the checkpoint's hf/ lies beside it; the loader then loads the weights.
            checkpoint = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            source = checkpoint_model_source(checkpoint, hp)
            self.tokenizer = data.load_tokenizer(source, hp["do_lower_case"])
            model = AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(source))
            # Checkpoints of distributed runs hold DistributedDataParallel's "module."-prefixed names;
            # the loader loads them into this plain model as they are.
            model._register_load_state_dict_pre_hook(
                lambda state, *_: torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state, "module."))
            self.model = context.wrap_model(model.eval())
            return
        self.hp = hp = settings.hyperparameters(context.get_hparams(), slots=context.distributed.size)
        data_conf = settings.data(context.get_data_config())
        features, info = data.prepare(hp, data_conf)
        self.tokenizer = info["tokenizer"]
        self.train_features, self.eval_features = features["train"], features["validation"]
        for split, report in info["report"].items():
            logger.info("%s features: %d from %d questions (%s, cache key %s)", split, report["features"],
                        report["examples"], report["status"], report["key"])
        self.autocast = precision(hp["amp"], context)  # before wrap_model: fp16 wraps the forward pass
        self.model = context.wrap_model(load_model(hp))
        self.optimizer = context.wrap_optimizer(build_optimizer(self.model, hp))
        length = self.max_length()
        # The training length in batches (the data loader is built once for it, not at every use).
        self.total_batches = length.value if isinstance(length, pytorch.Batch) else length.value * self.batches_per_epoch()
        total = math.ceil(self.total_batches / hp["aggregation_frequency"])  # optimizer steps
        warmup = int(hp["warmup_fraction"] * total)
        logger.info("%d optimizer steps (%d warmup), effective batch %d", total, warmup,
                    context.get_global_batch_size() * hp["aggregation_frequency"])
        self.scheduler = context.wrap_lr_scheduler(
            torch.optim.lr_scheduler.LambdaLR(self.optimizer, linear_warmup_decay(warmup, total)),
            step_mode=pytorch.LRScheduler.StepMode.STEP_EVERY_OPTIMIZER_STEP)

        self.eval_sampler = data.QuestionShardedBatchSampler(
            self.eval_features.arrays["lengths"], self.eval_features.arrays["example_index"],
            context.get_per_slot_batch_size(), replicas=context.distributed.size)
        self.evaluator = SquadEvaluator(self.eval_features, data.fetch(data_conf["validation_file"], data.cache_root(data_conf)),
                                        hp, self.eval_sampler.owned(context.distributed.rank))
        if context.distributed.rank == 0:
            self.evaluator.tensorboard = context.get_tensorboard_writer
        self.logits = context.wrap_reducer(LogitsReducer(self.evaluator, context.distributed), for_training=False)
        self.grad_norm = 0.0  # gradient norm at the last optimizer step (NaN is not valid JSON for the master)
        self.last_batch_end: Optional[float] = None
        self.batches_trained = 0
        self.last_metrics: Dict[str, Any] = {}

    def batches_per_epoch(self) -> int:
        """Batches each rank trains per epoch, as Determined's DataLoader shards them (the chief's count)."""
        return math.ceil(len(self.build_training_data_loader()) / self.context.distributed.size)

    def max_length(self) -> pytorch.TrainUnit:
        if self.hp.get("max_batches"):
            return pytorch.Batch(int(self.hp["max_batches"]))
        return pytorch.Epoch(int(self.hp["epochs"]))

    def _clip(self, params) -> None:
        self.grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.hp["max_grad_norm"]))

    def train_batch(self, batch: Dict[str, torch.Tensor], epoch_idx: int, batch_idx: int) -> Dict[str, Any]:
        started = time.perf_counter()
        batch.pop("feature_index")
        start_positions, end_positions = batch.pop("start_positions"), batch.pop("end_positions")
        with self.autocast():
            out = self.model(**batch)
        loss = qa_loss(out.start_logits, out.end_logits, start_positions, end_positions, batch["attention_mask"])
        self.context.backward(loss)
        self.context.step_optimizer(self.optimizer, clip_grads=self._clip)
        loss = loss.item()  # also waits for the device, so the timing below is real
        now = time.perf_counter()
        seconds = now - (self.last_batch_end or started)
        self.last_batch_end = now
        self.batches_trained = batch_idx + 1
        world = self.context.distributed.size
        mask = batch["attention_mask"]
        return {"loss": loss, "lr": self.scheduler.get_last_lr()[0], "grad_norm": self.grad_norm,
                "examples_per_s": world * mask.shape[0] / seconds,
                "tokens_per_s": world * float(mask.sum()) / seconds,
                "padding_efficiency": float(mask.float().mean())}

    def evaluate_batch(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> Dict[str, Any]:
        if batch_idx == 0 and self.context.distributed.rank == 0:
            self.evaluator.out_dir = os.path.join(self.predictions_dir, f"batch_{self.batches_trained}")
            self.evaluator.step = self.batches_trained
        feature_index = batch.pop("feature_index")
        with self.autocast():
            out = self.model(**batch)
        self.logits.update(feature_index, out.start_logits, out.end_logits)
        self.last_batch_end = None  # validation time is not training time
        return {}

    def build_training_data_loader(self) -> pytorch.DataLoader:
        # Seeded by the config: every rank draws the same batches, and a resumed run (which skips
        # the batches already trained) sees the same order as an uninterrupted one.
        features = self.train_features
        collate = data.Collator(features.arrays, self.hp["pad_to_max_length"])
        dataset, batch_size = data.FeatureDataset(features), self.context.get_per_slot_batch_size()
        if self.hp["bucket_by_length"] and not self.hp["pad_to_max_length"]:
            sampler = data.LengthBucketBatchSampler(features.arrays["lengths"], batch_size, True, int(self.hp["seed"]),
                                                    replicas=self.context.distributed.size)
            return pytorch.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
        generator = torch.Generator().manual_seed(int(self.hp["seed"]))
        return pytorch.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator, collate_fn=collate)

    def build_validation_data_loader(self) -> pytorch.DataLoader:
        # Sorted by length within each rank, every question's features on one rank (SquadEvaluator).
        return pytorch.DataLoader(data.FeatureDataset(self.eval_features), batch_sampler=self.eval_sampler,
                                  collate_fn=data.Collator(self.eval_features.arrays, self.hp["pad_to_max_length"]))

    def build_callbacks(self) -> Dict[str, pytorch.PyTorchCallback]:
        return {"checkpoint_extras": CheckpointExtras(self), "last_metrics": _KeepMetrics(self),
                "consolidate": ConsolidateShardedOptimizer(self)}


class ConsolidateShardedOptimizer(pytorch.PyTorchCallback):
    """A sharded (ZeRO) optimizer's state must be gathered to the chief by every rank before the
    chief can save it, but Determined's checkpoints are written by the chief alone. Determined
    checkpoints only after a training workload (at a checkpoint or validation boundary, at the end,
    or when preempted), and this hook runs on every rank right before those decisions: it gathers
    the state whenever one of them may follow. (A preemption that arrives between this hook's
    question and Determined's own saves the state gathered at the last boundary.)"""

    def __init__(self, trial: "SquadTrial"):
        self.trial = trial
        self.gathered_at: Optional[int] = None  # the batch whose optimizer state the chief holds

    def on_training_workload_end(self, avg_metrics, batch_metrics) -> None:
        optimizer, hp, done = self.trial.optimizer, self.trial.hp, self.trial.batches_trained
        if not isinstance(optimizer, ZeroRedundancyOptimizer):
            return
        boundary = any(p and done % int(p) == 0 for p in (hp["checkpoint_period_batches"], hp["validation_period_batches"]))
        # should_preempt is collective (every rank asks, the chief answers): every rank calls it here.
        preempted = self.trial.context._core.preempt.should_preempt(auto_ack=False)
        if boundary or preempted or done >= self.trial.total_batches or self.gathered_at is None:
            optimizer.consolidate_state_dict(to=0)
            self.gathered_at = done

    def on_checkpoint_save_start(self, checkpoint: Dict[str, Any]) -> None:
        done = self.trial.batches_trained
        if isinstance(self.trial.optimizer, ZeroRedundancyOptimizer) and self.gathered_at != done:
            # Determined 0.38.1 asks should_preempt again after this hook (determined/pytorch/
            # _pytorch_trial.py, _train: on_training_workload_end at line 575, _stop_requested at
            # line 608, whose exit checkpoint is saved at line 501); a preemption announced in between
            # saves the state gathered at an earlier batch. The local mode cannot make that happen.
            logger.warning("checkpoint at batch %d holds the sharded optimizer's state gathered at batch %s, "
                           "not at batch %d (a preemption arrived between gatherings)", done, self.gathered_at, done)


class _KeepMetrics(pytorch.PyTorchCallback):
    def __init__(self, trial: SquadTrial):
        self.trial = trial

    def on_validation_end(self, metrics: Dict[str, Any]) -> None:
        self.trial.last_metrics = metrics


def predictions_root(output_dir: Optional[str]) -> str:
    """Where the chief writes each validation's predictions: <output-dir>/predictions locally; on a
    cluster a local scratch directory. Not the TensorBoard directory: under torch_distributed every
    local rank shares it and Determined uploads its non-event files from each non-chief rank
    (determined/pytorch/_pytorch_trial.py, _upload_tb_files), so they would go up once per GPU.
    They reach checkpoint storage in every checkpoint (CheckpointExtras), the final one included."""
    if output_dir:
        return os.path.join(output_dir, "predictions")
    return os.path.join(tempfile.gettempdir(), f"squad-predictions-{os.environ.get('DET_ALLOCATION_ID', 'local')}")


# ---------------------------------------------------------------------------------------------
# entrypoint
# ---------------------------------------------------------------------------------------------

def period(batches: Any) -> Optional[pytorch.TrainUnit]:
    """A period in batches from the config; 0 or missing means never (only at the end)."""
    return pytorch.Batch(int(batches)) if batches else None


@contextlib.contextmanager
def _resume_at(steps_completed: int):
    """Determined 0.38's local mode always restarts the data loader and batch counter at 0 when
    resuming, so a resumed local run would replay the first batches. On a cluster the master
    supplies steps_completed; locally we supply it from the checkpoint's metadata."""
    if not steps_completed:
        yield
        return
    original = pytorch._PyTorchTrialController

    class Resumed(original):
        def __init__(self, *args, **kwargs):
            kwargs["steps_completed"] = steps_completed
            super().__init__(*args, **kwargs)

    pytorch._PyTorchTrialController = Resumed
    try:
        yield
    finally:
        pytorch._PyTorchTrialController = original


def main(argv=None) -> Dict[str, Any]:
    parser = settings.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="experiment config (local runs); on a cluster it comes from the master")
    parser.add_argument("--output-dir", default="outputs", help="local runs: checkpoints and TensorBoard events")
    parser.add_argument("--resume", help="local runs: a checkpoint directory under <output-dir>/determined")
    parser.add_argument("--check", action="store_true",
                        help="validate the config and print the resolved settings as JSON, without training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)

    info = det.get_cluster_info()
    on_cluster = info is not None and info.task_type == "TRIAL"
    distributed, exp_conf, steps_completed = None, None, 0
    # The settings first, on every rank: a config mistake ends here, before any download,
    # featurization or model load.
    if on_cluster:
        resolved = settings.resolve(info.trial._config, "experiment config", hparams=info.trial.hparams)
        hparams, latest_checkpoint = info.trial.hparams, info.latest_checkpoint
    else:
        if not args.config:
            parser.error("--config is required outside a Determined cluster")
        exp_conf = settings.load_config(args.config)
        resolved = settings.resolve(exp_conf, args.config, world_size=int(os.environ.get("WORLD_SIZE", "1")))
        hparams, latest_checkpoint = resolved["hyperparameters"], None
    if args.check:
        print(json.dumps(resolved, indent=1))
        return resolved
    if not on_cluster:
        output_dir = os.path.abspath(args.output_dir)
        # Local checkpoints go to $XDG_DATA_HOME/determined (Determined's local storage rule).
        os.environ["XDG_DATA_HOME"] = output_dir
        if args.resume:
            checkpoint = os.path.abspath(args.resume)
            if os.path.dirname(checkpoint) != os.path.join(output_dir, "determined"):
                parser.error(f"--resume {args.resume}: expected a checkpoint under {output_dir}/determined")
            try:
                with open(os.path.join(checkpoint, "metadata.json")) as f:
                    steps_completed = int(json.load(f)["steps_completed"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise settings.ConfigError(f"--resume {args.resume}: not a readable checkpoint of this trial "
                                           f"({type(err).__name__}: {err}); pass a directory under {output_dir}/determined")
            latest_checkpoint = os.path.basename(checkpoint)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Under torchrun: the gloo backend on CPU, as Determined's launcher would set up on a cluster.
            os.environ["USE_TORCH_DISTRIBUTED"] = "1"
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            distributed = core.DistributedContext.from_torch_distributed()
    hp = resolved["hyperparameters"]
    if not on_cluster:  # on a cluster Determined seeds every process with the trial's seed
        random.seed(int(hp["seed"]))
        np.random.seed(int(hp["seed"]))
        torch.manual_seed(int(hp["seed"]))
    with det.pytorch.init(hparams=hparams, exp_conf=exp_conf, distributed=distributed,
                          aggregation_frequency=int(hp["aggregation_frequency"])) as context:
        if not on_cluster:
            # Determined's local train context has no TensorBoard directory of its own.
            context._core.train._tbd_directory = os.path.join(output_dir, "tensorboard")
        trial = SquadTrial(context, None if on_cluster else output_dir)
        trainer = det.pytorch.Trainer(trial, context)
        with _resume_at(steps_completed):
            trainer.fit(max_length=trial.max_length(),
                        validation_period=period(hp["validation_period_batches"]),
                        checkpoint_period=period(hp["checkpoint_period_batches"]),
                        reporting_period=pytorch.Batch(int(hp["reporting_period_batches"])),
                        checkpoint_policy="best" if on_cluster else "all",
                        latest_checkpoint=latest_checkpoint)
    if context.distributed.rank == 0 and not on_cluster:
        print(json.dumps(trial.last_metrics, default=float), flush=True)
    return trial.last_metrics


if __name__ == "__main__":
    # Run the trial from the importable module, not from __main__: checkpoints record the trial
    # class as "<module>:<class>" (determined/pytorch/_pytorch_trial.py, load_data.json), and
    # determined.pytorch.load_trial_from_checkpoint_path imports it from the checkpoint's code/.
    import model_def

    settings.run_command(model_def.main)
