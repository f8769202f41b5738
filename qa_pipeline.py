"""The Hugging Face pipeline of an exported model:

    qa = transformers.pipeline("question-answering", model=OUT_DIR, trust_remote_code=True)
    qa(question="Who founded it?", context="...")  # {"answer", "score", "start", "end"}

transformers 5 removed its own "question-answering" task. `save()` (used by export.py and, with
`export_hf_model`, by every checkpoint) registers this class for that task in the directory's
config.json (`custom_pipelines`) and copies it there with the two modules it imports, so the
pipeline answers exactly as evaluation and predict.py do: the same windows, n-best search and
null-score threshold, from the settings the model was trained with (`squad_settings` in config.json).
trust_remote_code=True is transformers' switch for running code that ships with a model directory.
"""

import collections
import os
import shutil

import numpy as np
from transformers import Pipeline

try:  # loaded from an exported directory by transformers, as a package with its neighbours
    from .postprocess import postprocess
    from .qa_features import Collator, Examples, FeatureSpec, featurize_batch
except ImportError:  # imported inside this project
    from postprocess import postprocess
    from qa_features import Collator, Examples, FeatureSpec, featurize_batch

TASK = "question-answering"
FILES = ("qa_pipeline.py", "qa_features.py", "postprocess.py")


def save(model, tokenizer, settings: dict, out_dir: str, weights: bool = True) -> None:
    """Writes config (with `settings` and this pipeline's registration), tokenizer, this module and
    its neighbours, and with `weights` the model as safetensors, into `out_dir`."""
    model.config.squad_settings = settings
    model.config.custom_pipelines = {
        TASK: {"impl": "qa_pipeline.SquadQAPipeline", "pt": ["AutoModelForQuestionAnswering"]}
    }
    (model if weights else model.config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    here = os.path.dirname(os.path.abspath(__file__))
    for name in FILES:
        shutil.copyfile(os.path.join(here, name), os.path.join(out_dir, name))


class RecentContexts:
    """The tokens of the contexts asked about last (featurize_batch's context_cache), at most
    `max_tokens` of them: questions about one context, in one list or call after call, tokenize
    it once."""

    def __init__(self, max_tokens: int = 1 << 20):
        self.max_tokens, self.tokens, self.entries = max_tokens, 0, collections.OrderedDict()

    def get(self, context: str):
        found = self.entries.get(context)
        if found is not None:
            self.entries.move_to_end(context)
        return found

    def __setitem__(self, context: str, tokens) -> None:
        self.entries[context] = tokens
        self.tokens += len(tokens[0])
        while self.tokens > self.max_tokens and len(self.entries) > 1:
            self.tokens -= len(self.entries.popitem(last=False)[1][0])


class SquadQAPipeline(Pipeline):
    """question + context → {"answer", "score", "start", "end"}: the answer text, its probability
    among the n-best candidates and the no-answer, and its character span in the context. The answer
    is "" (start = end = 0) when the no-answer score beats the best span by more than the threshold.
    `top_k=N` returns the N best candidates instead (the no-answer among them, as ""). Inputs:
    question=, context=; or a {"question", "context"} dict; or a list of such dicts."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recent_contexts = RecentContexts()

    def __call__(self, inputs=None, *, question=None, context=None, **kwargs):
        if question is not None or context is not None:
            inputs = {"question": question, "context": context}
        if kwargs.get("batch_size", 1) not in (None, 1):
            raise ValueError(
                "batch_size: each question runs as one batch of all its windows; leave it at 1"
            )
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, top_k=None, null_score_diff_threshold=None):
        post = {"top_k": top_k, "null_score_diff_threshold": null_score_diff_threshold}
        return {}, {}, {k: v for k, v in post.items() if v is not None}

    def preprocess(self, inputs):
        if not isinstance(inputs, dict) or not all(
            isinstance(inputs.get(k), str) and inputs[k].strip() for k in ("question", "context")
        ):
            raise ValueError(
                "give question= and context= (non-empty strings), or a list of "
                "{'question': ..., 'context': ...} dicts"
            )
        s = self.model.config.squad_settings
        spec = FeatureSpec(
            s["max_seq_length"], s["doc_stride"], s["max_query_length"], s["token_type_ids"]
        )
        examples = Examples(
            ["q"], [inputs["question"]], [inputs["context"]], [0], [-1], [""], [False]
        )
        arrays = featurize_batch(
            examples, 0, 1, self.tokenizer, spec, training=False, context_cache=self.recent_contexts
        )
        batch = Collator(arrays)(range(len(arrays["input_ids"])))
        del batch["feature_index"]
        return {"batch": batch, "offsets": arrays["offsets"], "context": inputs["context"]}

    def _forward(self, inputs):
        out = self.model(**inputs["batch"])
        return {
            "start": out.start_logits.float(),
            "end": out.end_logits.float(),
            "offsets": inputs["offsets"],
            "context": inputs["context"],
        }

    def postprocess(self, outputs, top_k=1, null_score_diff_threshold=None):
        s = self.model.config.squad_settings
        threshold = (
            s["null_score_diff_threshold"]
            if null_score_diff_threshold is None
            else null_score_diff_threshold
        )
        start, end = outputs["start"].numpy(), outputs["end"].numpy()
        predictions, nbest, _ = postprocess(
            ["q"],
            [outputs["context"]],
            np.zeros(len(start), dtype=np.int64),
            outputs["offsets"],
            start,
            end,
            n_best_size=s["n_best_size"],
            max_answer_length=s["max_answer_length"],
            null_score_diff_threshold=threshold,
        )
        entries = [
            {"answer": x["text"], "score": x["probability"], "start": x["start"], "end": x["end"]}
            for x in nbest["q"]
        ]
        if top_k > 1:
            return entries[:top_k]
        return next(x for x in entries if x["answer"] == predictions["q"])
