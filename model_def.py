"""Fine-tune an extractive-QA model (ALBERT-xxlarge-v2 by default) on SQuAD 2.0 with Determined:
the PyTorchTrial and the main() that runs it, locally or on a cluster.

On a cluster (entrypoint `python3 -m determined.launch.torch_distributed python3 model_def.py`) the
hyperparameters and latest checkpoint come from the cluster. Locally the same code reads the same
YAML config:

    python model_def.py --config configs/local_tiny.yaml [--output-dir outputs] [--resume CHECKPOINT]
    torchrun --nproc_per_node 2 model_def.py --config configs/local_tiny_2proc.yaml

The trial's parts live beside it: data.py (features), samplers.py, models.py, training.py
(optimizer, schedule, loss, precision), evaluation.py, callbacks.py (and Determined's private APIs).
"""

import argparse
import json
import logging
import math
import os
import random
import sys
import time
from typing import Any, Dict, Optional

import determined as det
import numpy as np
import torch
from determined import core, pytorch

import callbacks
import data
import errors
import evaluation
import models  # also allowlists the NumPy types in Determined's checkpoints for torch.load
import samplers
import settings
import training

logger = logging.getLogger("model_def")


class SquadTrial(pytorch.PyTorchTrial):
    def __init__(
        self, context: pytorch.PyTorchTrialContext, output_dir: Optional[str] = None
    ) -> None:
        self.context = context
        self.predictions_dir = callbacks.predictions_root(output_dir)
        if isinstance(context, pytorch.CheckpointLoadContext):
            # Inference needs only the model's settings: a checkpoint written under older rules
            # (say, a period the settings now reject) still loads.
            self.hp = hp = settings.hyperparameters(context.get_hparams(), problems=[])
            # determined.pytorch.load_trial_from_checkpoint_path: the model only, for inference,
            # offline. It imports this file from the checkpoint's code/ (determined/util.py,
            # write_user_code), so the checkpoint's hf/ lies beside it; the loader then loads the weights.
            checkpoint = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            source = models.checkpoint_model_source(checkpoint, hp)
            self.tokenizer = models.load_tokenizer(source, hp["do_lower_case"])
            self.model = context.wrap_model(models.checkpoint_model(source))
            return
        self.hp = hp = settings.hyperparameters(
            context.get_hparams(), slots=context.distributed.size
        )
        data_conf = settings.data(context.get_data_config())
        models.check_gradient_checkpointing(hp)  # from config.json, before features and weights
        features, info = data.prepare(hp, data_conf, distributed=context.distributed)
        self.tokenizer = info["tokenizer"]
        self.train_features, self.eval_features = features["train"], features["validation"]
        for split, report in info["report"].items():
            logger.info(
                "%s features: %d from %d questions (%s, cache key %s)",
                split,
                report["features"],
                report["examples"],
                report["status"],
                report["key"],
            )
        self.precision = training.Precision(hp["amp"], context)  # before wrap_model (fp16's scaler)
        self.model = context.wrap_model(models.load_model(hp))
        self.optimizer = context.wrap_optimizer(training.build_optimizer(self.model, hp))
        length = self.max_length()
        # The training length in batches (the data loader is built once for it, not at every use).
        self.total_batches = (
            length.value
            if isinstance(length, pytorch.Batch)
            else length.value * self.batches_per_epoch()
        )
        total = math.ceil(self.total_batches / hp["aggregation_frequency"])  # optimizer steps
        warmup = int(hp["warmup_fraction"] * total)
        logger.info(
            "%d optimizer steps (%d warmup), effective batch %d",
            total,
            warmup,
            context.get_global_batch_size() * hp["aggregation_frequency"],
        )
        self.scheduler = context.wrap_lr_scheduler(
            torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, training.linear_warmup_decay(warmup, total)
            ),
            step_mode=pytorch.LRScheduler.StepMode.STEP_EVERY_OPTIMIZER_STEP,
        )

        self.eval_sampler = samplers.QuestionShardedBatchSampler(
            self.eval_features.arrays["lengths"],
            self.eval_features.arrays["example_index"],
            hp["per_slot_validation_batch_size"],
            replicas=context.distributed.size,
        )
        self.evaluator = evaluation.SquadEvaluator(
            self.eval_features,
            info["paths"]["validation"],
            hp,
            self.eval_sampler.owned(context.distributed.rank),
        )
        if context.distributed.rank == 0:
            self.evaluator.tensorboard = context.get_tensorboard_writer
        self.logits = context.wrap_reducer(
            evaluation.LogitsReducer(self.evaluator, context.distributed), for_training=False
        )
        self.grad_norm = (
            0.0  # gradient norm at the last optimizer step (NaN is not valid JSON for the master)
        )
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
        # Determined calls this only on the batches that step the optimizer.
        self.precision.unscale(self.optimizer)
        norm = float(torch.nn.utils.clip_grad_norm_(params, self.hp["max_grad_norm"]))
        if math.isfinite(norm):  # fp16 overflow: the scaler skips this step; keep the last norm
            self.grad_norm = norm
        self.optimizer_stepped = True

    def train_batch(
        self, batch: Dict[str, torch.Tensor], epoch_idx: int, batch_idx: int
    ) -> Dict[str, Any]:
        started = time.perf_counter()
        batch.pop("feature_index")
        start_positions, end_positions = batch.pop("start_positions"), batch.pop("end_positions")
        with self.precision.autocast():
            out = self.model(**batch)
        loss = training.qa_loss(
            out.start_logits,
            out.end_logits,
            start_positions,
            end_positions,
            batch["attention_mask"],
        )
        self.context.backward(self.precision.scale(loss))
        self.optimizer_stepped = False
        self.context.step_optimizer(
            self.optimizer, clip_grads=self._clip, scaler=self.precision.scaler
        )
        if self.optimizer_stepped:
            self.precision.update()
        loss = loss.item()  # also waits for the device, so the timing below is real
        now = time.perf_counter()
        seconds = now - (self.last_batch_end or started)
        self.last_batch_end = now
        self.batches_trained = batch_idx + 1
        world = self.context.distributed.size
        mask = batch["attention_mask"]
        return {
            "loss": loss,
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": self.grad_norm,
            "examples_per_s": world * mask.shape[0] / seconds,
            "tokens_per_s": world * float(mask.sum()) / seconds,
            "padding_efficiency": float(mask.float().mean()),
        }

    def evaluate_batch(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> Dict[str, Any]:
        if batch_idx == 0 and self.context.distributed.rank == 0:
            self.evaluator.out_dir = os.path.join(
                self.predictions_dir, f"batch_{self.batches_trained}"
            )
            self.evaluator.step = self.batches_trained
        feature_index = batch.pop("feature_index")
        # inference_mode: no autograd bookkeeping at all. Its tensors stay here: the reducer keeps
        # NumPy copies of the logits, and nothing of this pass is reused by a training step.
        with torch.inference_mode(), self.precision.autocast():
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
            sampler = samplers.LengthBucketBatchSampler(
                features.arrays["lengths"],
                batch_size,
                True,
                int(self.hp["seed"]),
                replicas=self.context.distributed.size,
            )
            return pytorch.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
        generator = torch.Generator().manual_seed(int(self.hp["seed"]))
        return pytorch.DataLoader(
            dataset, batch_size=batch_size, shuffle=True, generator=generator, collate_fn=collate
        )

    def build_validation_data_loader(self) -> pytorch.DataLoader:
        # Sorted by length within each rank, every question's features on one rank (SquadEvaluator).
        return pytorch.DataLoader(
            data.FeatureDataset(self.eval_features),
            batch_sampler=self.eval_sampler,
            collate_fn=data.Collator(self.eval_features.arrays, self.hp["pad_to_max_length"]),
        )

    def build_callbacks(self) -> Dict[str, pytorch.PyTorchCallback]:
        return {
            "checkpoint_extras": callbacks.CheckpointExtras(self),
            "last_metrics": callbacks.KeepMetrics(self),
            "consolidate": callbacks.ConsolidateShardedOptimizer(self),
        }


def period(batches: Any) -> Optional[pytorch.TrainUnit]:
    """A period in batches from the config; 0 or missing means never (only at the end)."""
    return pytorch.Batch(int(batches)) if batches else None


def main(argv=None) -> Dict[str, Any]:
    parser = errors.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", help="experiment config (local runs); on a cluster it comes from the master"
    )
    parser.add_argument(
        "--output-dir", default="outputs", help="local runs: checkpoints and TensorBoard events"
    )
    parser.add_argument(
        "--resume", help="local runs: a checkpoint directory under <output-dir>/determined"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the config and print the resolved settings as JSON, without training",
    )
    args = parser.parse_args(argv)
    errors.setup_logging()

    info = det.get_cluster_info()
    on_cluster = info is not None and info.task_type == "TRIAL"
    distributed, exp_conf, steps_completed = None, None, 0
    # The settings first, on every rank: a config mistake ends here, before any download,
    # featurization or model load.
    if on_cluster:
        # The experiment config's parts through public APIs: the data section (user_data is {}
        # when the section is missing), this trial's hyperparameters and the slots it was given.
        config = {
            "data": info.user_data or None,
            "resources": {"slots_per_trial": sum(info.container_slot_counts)},
        }
        resolved = settings.resolve(config, "experiment config", hparams=info.trial.hparams)
        hparams, latest_checkpoint = info.trial.hparams, info.latest_checkpoint
    else:
        if not args.config:
            parser.error("--config is required outside a Determined cluster")
        exp_conf = settings.load_config(args.config)
        resolved = settings.resolve(
            exp_conf, args.config, world_size=int(os.environ.get("WORLD_SIZE", "1"))
        )
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
                parser.error(
                    f"--resume {args.resume}: expected a checkpoint under {output_dir}/determined"
                )
            try:
                with open(os.path.join(checkpoint, "metadata.json")) as f:
                    steps_completed = int(json.load(f)["steps_completed"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise errors.ConfigError(
                    f"--resume {args.resume}: not a readable checkpoint of this trial "
                    f"({type(err).__name__}: {err}); pass a directory under {output_dir}/determined"
                ) from err
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
    with det.pytorch.init(
        hparams=hparams,
        exp_conf=exp_conf,
        distributed=distributed,
        aggregation_frequency=int(hp["aggregation_frequency"]),
    ) as context:
        if not on_cluster:
            callbacks.set_local_tensorboard_dir(context, os.path.join(output_dir, "tensorboard"))
        trial = SquadTrial(context, None if on_cluster else output_dir)
        trainer = det.pytorch.Trainer(trial, context)
        with callbacks.resume_at(steps_completed):
            trainer.fit(
                max_length=trial.max_length(),
                validation_period=period(hp["validation_period_batches"]),
                checkpoint_period=callbacks.CheckpointPeriod(
                    int(hp["checkpoint_period_batches"]) or sys.maxsize, trial.total_batches
                ),
                reporting_period=pytorch.Batch(int(hp["reporting_period_batches"])),
                checkpoint_policy="best" if on_cluster else "all",
                latest_checkpoint=latest_checkpoint,
            )
    if context.distributed.rank == 0 and not on_cluster:
        print(json.dumps(trial.last_metrics, default=float), flush=True)
    return trial.last_metrics


if __name__ == "__main__":
    # Run the trial from the importable module, not from __main__: checkpoints record the trial
    # class as "<module>:<class>" (determined/pytorch/_pytorch_trial.py, load_data.json), and
    # determined.pytorch.load_trial_from_checkpoint_path imports it from the checkpoint's code/.
    import model_def

    errors.run_command(model_def.main)
