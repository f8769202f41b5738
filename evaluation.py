"""Validation split by question: each rank turns its own questions' logits into answers
(LogitsReducer), only the answers travel to the chief, and the chief scores them with the official
SQuAD 2.0 metrics and writes the predictions files and pictures (SquadEvaluator)."""

import json
import logging
from typing import Any, Dict, Optional

import numpy as np
import torch
from determined import core, pytorch

import postprocess
import squad_eval
import squad_file
from cache import Features

logger = logging.getLogger("evaluation")


class SquadEvaluator:
    """Evaluation split by question: each rank post-processes the questions whose features it
    evaluated (samplers.QuestionShardedBatchSampler); the chief merges the answers, scores them and
    writes the predictions files."""

    def __init__(
        self, features: Features, validation_path: str, hp: Dict[str, Any], owned: np.ndarray
    ):
        self.features, self.validation_path, self.hp, self.owned = (
            features,
            validation_path,
            hp,
            owned,
        )
        self.out_dir: Optional[str] = None  # where the next validation writes its files (chief)
        self.step = 0  # the batch the next validation follows
        self.tensorboard = None  # the chief's SummaryWriter factory, for the curves
        self.last_dir: Optional[str] = None
        self.articles: Optional[list] = (
            None  # the validation file's gold answers, read at the first validation
        )

    def answers(self, feature_index: np.ndarray, start_logits: np.ndarray, end_logits: np.ndarray):
        """(predictions, nbest, null_odds) of this rank's questions, from their features' logits
        (features of other ranks' questions, and repeats, are dropped)."""
        if not len(self.owned):
            return {}, {}, {}
        keep = np.isin(feature_index, self.owned)
        feature_index, first = np.unique(feature_index[keep], return_index=True)
        if not np.array_equal(feature_index, self.owned):
            raise RuntimeError(
                f"validation covered {len(feature_index)} of this rank's {len(self.owned)} features"
            )
        example_index = np.asarray(self.features.arrays["example_index"])[feature_index]
        questions, local = np.unique(example_index, return_inverse=True)
        return postprocess.postprocess(
            [self.features.example_ids[q] for q in questions],
            [self.features.example_contexts[q] for q in questions],
            local,
            self.features.arrays["offsets"][feature_index],
            start_logits[keep][first],
            end_logits[keep][first],
            n_best_size=self.hp["n_best_size"],
            max_answer_length=self.hp["max_answer_length"],
            null_score_diff_threshold=self.hp["null_score_diff_threshold"],
        )

    def score(self, predictions: dict, nbest: dict, null_odds: dict) -> Dict[str, Any]:
        """Official metrics of every question's answer; writes the predictions files (chief)."""
        if self.articles is None:
            # The kept questions with all their gold answers, read by the same reader and rules as
            # the features were (any layout); what read_squad skipped (skip_invalid_examples) is
            # skipped here again, quietly, and not scored.
            kept = set(self.features.example_ids)
            records = squad_file.read(self.validation_path, "validation", True, quiet=True)
            questions = [qa for qa in records.questions if qa["id"] in kept]
            self.articles = [{"paragraphs": [{"qas": questions}]}]
        metrics = squad_eval.evaluate(
            self.articles,
            predictions,
            null_odds,
            self.hp["null_score_diff_threshold"],
            span_preds=postprocess.best_spans(nbest),
        )
        curves = squad_eval.precision_recall(self.articles, predictions, null_odds)
        metrics.update(squad_eval.pr_metrics(curves))
        if self.out_dir:
            squad_eval.write_predictions(self.out_dir, predictions, nbest, null_odds, metrics)
            # The official evaluation's pictures, beside the predictions and in TensorBoard.
            figures = squad_eval.figures(self.articles, null_odds, curves)
            squad_eval.write_figures(self.out_dir, figures)
            logger.info(
                "wrote predictions.json, nbest_predictions.json, null_odds.json, metrics.json and %s to %s",
                ", ".join(figures),
                self.out_dir,
            )
            if self.tensorboard is not None:
                writer = self.tensorboard()
                for name, figure in figures.items():
                    writer.add_image(
                        f"squad/{name[:-4]}",
                        squad_eval.figure_rgb(figure),
                        self.step,
                        dataformats="HWC",
                    )
                writer.flush()
            self.last_dir = self.out_dir
        return metrics


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
        self.parts.append(
            (feature_index.cpu().numpy(), start.float().cpu().numpy(), end.float().cpu().numpy())
        )

    def per_slot_reduce(self):
        answers = self.evaluator.answers(*postprocess.stack_logits(self.parts))
        text = json.dumps(answers)  # JSON text, not pickled objects, crosses the process boundary
        logger.info(
            "rank %d answered its %d questions (%d bytes of answers)",
            self.distributed.rank,
            len(answers[0]),
            len(text),
        )
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
