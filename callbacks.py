"""The trial's callbacks, and every use of a private Determined API in the project, each with the
reason no public one serves. All checked against determined 0.38.1; look here first when
upgrading Determined.

    CheckpointExtras              every checkpoint also carries hf/ (config, tokenizer, pipeline
                                  code, optionally weights) and the latest predictions
    ConsolidateShardedOptimizer   gathers a ZeRO-sharded optimizer state to the chief before a
                                  checkpoint may be written (private: the preemption question)
    KeepMetrics                   keeps the latest validation metrics for the trial
    resume_at                     local runs resume at the checkpoint's batch (private: the
                                  trial controller)
    set_local_tensorboard_dir     local runs write TensorBoard events under --output-dir
                                  (private: the train context's directory)
    predictions_root              where each validation's predictions are written
    CheckpointPeriod              a checkpoint period that never falls on the last batch, so the
                                  final checkpoint follows the final validation
"""

import contextlib
import logging
import os
import shutil
import tempfile
from typing import Any, Dict, Optional

from determined import pytorch
from torch.distributed.optim import ZeroRedundancyOptimizer

import files
import models
import qa_pipeline

logger = logging.getLogger("callbacks")


class CheckpointPeriod(pytorch.Batch):
    """`Batch(period)` for Trainer.fit's checkpoint_period, except at the last batch of training.

    Determined 0.38.1 (determined/pytorch/_pytorch_trial.py, `_train`) handles the boundaries of a
    batch in the order train, validate, checkpoint, report, and after the last batch validates and
    then checkpoints only if the last checkpoint is not current. So when the last batch is a
    checkpoint boundary but not a validation boundary, the checkpoint is written first, the final
    validation follows, and no checkpoint holds its predictions or tuned threshold. Not firing at
    the last batch leaves that batch to the end-of-training path: validate, then checkpoint.
    `last` is the training length in batches (epochs are converted at the start)."""

    def __init__(self, period: int, last: int) -> None:
        super().__init__(period)
        self.last = last

    def should_stop(self, step_num: int) -> bool:
        return step_num != self.last and super().should_stop(step_num)


class CheckpointExtras(pytorch.PyTorchCallback):
    """Adds to each checkpoint what makes it usable on its own: the model's Hugging Face config and
    tokenizer and the pipeline code (`hf/`, a few MB; with `export_hf_model` also the weights as
    safetensors, so `transformers.pipeline` loads `hf/` as it loads export.py's directory) and the
    latest validation's predictions. `trial` has model, tokenizer, hp, last_metrics and evaluator."""

    def __init__(self, trial):
        self.trial = trial

    def on_checkpoint_write_end(self, checkpoint_dir: str) -> None:
        hf = os.path.join(checkpoint_dir, "hf")
        model = models.unwrap(self.trial.model)
        carried = models.squad_settings(self.trial.hp, model.config, self.trial.last_metrics)
        # Published whole: a full disk ends as errors.DiskFull naming it, with nothing half-written.
        with files.atomic_dir(hf) as tmp:
            qa_pipeline.save(
                model, self.trial.tokenizer, carried, tmp, weights=self.trial.hp["export_hf_model"]
            )
        last = self.trial.evaluator.last_dir
        if last and os.path.isdir(last):
            with files.atomic_dir(os.path.join(checkpoint_dir, "predictions")) as tmp:
                shutil.copytree(last, tmp, dirs_exist_ok=True)


class ConsolidateShardedOptimizer(pytorch.PyTorchCallback):
    """A sharded (ZeRO) optimizer's state must be gathered to the chief by every rank before the
    chief can save it, but Determined's checkpoints are written by the chief alone. Determined
    checkpoints only after a training workload (at a checkpoint or validation boundary, at the end,
    or when preempted), and this hook runs on every rank right before those decisions: it gathers
    the state whenever one of them may follow. (A preemption that arrives between this hook's
    question and Determined's own saves the state gathered at the last boundary.)
    `trial` has optimizer, hp, batches_trained, total_batches and context."""

    def __init__(self, trial):
        self.trial = trial
        self.gathered_at: Optional[int] = None  # the batch whose optimizer state the chief holds

    def on_training_workload_end(self, avg_metrics, batch_metrics) -> None:
        optimizer, hp, done = self.trial.optimizer, self.trial.hp, self.trial.batches_trained
        if not isinstance(optimizer, ZeroRedundancyOptimizer):
            return
        periods = (hp["checkpoint_period_batches"], hp["validation_period_batches"])
        boundary = any(p and done % int(p) == 0 for p in periods)
        # Private (checked against determined 0.38.1): PyTorchTrialContext has no public
        # preemption question; its core context's should_preempt is collective (every rank asks,
        # the chief answers), so every rank calls it here, and auto_ack=False leaves the
        # acknowledgement to Determined's own later question.
        preempted = self.trial.context._core.preempt.should_preempt(auto_ack=False)
        if boundary or preempted or done >= self.trial.total_batches or self.gathered_at is None:
            optimizer.consolidate_state_dict(to=0)
            self.gathered_at = done

    def on_checkpoint_save_start(self, checkpoint: Dict[str, Any]) -> None:
        done = self.trial.batches_trained
        if isinstance(self.trial.optimizer, ZeroRedundancyOptimizer) and self.gathered_at != done:
            # Determined's training loop (determined/pytorch/_pytorch_trial.py, _train) asks
            # should_preempt again after on_training_workload_end, and saves its exit checkpoint
            # when the answer is yes: a preemption announced in between saves the state gathered
            # at an earlier batch. The local mode cannot make that happen.
            logger.warning(
                "checkpoint at batch %d holds the sharded optimizer's state gathered at batch %s, "
                "not at batch %d (a preemption arrived between gatherings)",
                done,
                self.gathered_at,
                done,
            )


class KeepMetrics(pytorch.PyTorchCallback):
    """Keeps each validation's metrics as the trial's last_metrics."""

    def __init__(self, trial):
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
    return os.path.join(
        tempfile.gettempdir(), f"squad-predictions-{os.environ.get('DET_ALLOCATION_ID', 'local')}"
    )


@contextlib.contextmanager
def resume_at(steps_completed: int):
    """Determined's local mode always restarts the data loader and batch counter at 0 when
    resuming, so a resumed local run would replay the first batches. On a cluster the master
    supplies steps_completed; locally we supply it from the checkpoint's metadata. Private
    (checked against determined 0.38.1): Trainer.fit builds pytorch._PyTorchTrialController with
    steps_completed from the cluster info and takes no such argument itself, so the class is
    replaced for the duration of fit."""
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


def set_local_tensorboard_dir(context: pytorch.PyTorchTrialContext, path: str) -> None:
    """Determined's local train context has no TensorBoard directory of its own, and det.pytorch.init
    takes none (core's local init does, but pytorch.init does not pass it on). Private (checked
    against determined 0.38.1): the train context's _tbd_directory, which its public
    get_tensorboard_path returns."""
    context._core.train._tbd_directory = path
