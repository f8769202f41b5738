"""Models and tokenizers: loading them (a hub name or a directory), the settings a model directory
carries (`squad_settings`), and the one checkpoint → model loader that the trial (under
Determined's checkpoint loader), export.py and predict.py share.

Importing it allowlists, for torch.load, the NumPy types Determined saves in its checkpoints.
"""

import importlib
import json
import logging
import os
import pickle
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.utils.checkpoint

import constants
import files
import settings
from errors import ConfigError, DataError, UserError
from qa_features import FeatureSpec

logger = logging.getLogger("models")

# Determined 0.38 saves NumPy's RNG state in its checkpoints and restores them with torch.load,
# whose weights-only default (torch >= 2.6) refuses NumPy arrays: without this allowlist no
# checkpoint could be resumed, on a cluster or locally. Only these NumPy types are allowed, under
# both names NumPy's array constructor has had (np.core in NumPy 1, np._core in 2), so checkpoints
# written on an image with NumPy 1 load with NumPy 2 and back. Before torch 2.6 torch.load unpickles
# fully by default (Determined's loads and load_checkpoint's alike) and there is nothing to allowlist.
WEIGHTS_ONLY_LOADS = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 6)
if WEIGHTS_ONLY_LOADS:
    _numpy_2 = int(np.__version__.split(".")[0]) >= 2
    _reconstruct = importlib.import_module(
        "numpy._core.multiarray" if _numpy_2 else "numpy.core.multiarray"
    )._reconstruct
    torch.serialization.add_safe_globals(
        [(_reconstruct, f"numpy.{core}.multiarray._reconstruct") for core in ("core", "_core")]
        + [np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    )


def load_tokenizer(name: str, do_lower_case: bool = True):
    """The model's fast tokenizer (its offset mappings cut answers out of contexts). A SentencePiece
    model (ALBERT's spiece.model) is converted by transformers with the `sentencepiece` package."""
    from transformers import AutoTokenizer

    fix = (
        "A model directory needs tokenizer.json, or its family's vocabulary files with "
        "tokenizer_config.json (ALBERT: spiece.model); tokenizer.save_pretrained(DIR) writes them."
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, do_lower_case=do_lower_case)
    except Exception as err:  # transformers' errors here are of many types and rarely name the file
        if not os.path.isdir(name):
            raise
        raise DataError(
            f"{name}: no usable tokenizer ({type(err).__name__}: {err}). The directory has: "
            f"{', '.join(sorted(os.listdir(name))) or 'nothing'}. {fix}"
        ) from err
    where = (
        f"{name} (it has: {', '.join(sorted(os.listdir(name))) or 'nothing'})"
        if os.path.isdir(name)
        else name
    )
    if not tokenizer.is_fast:
        raise DataError(
            f"{where}: no usable tokenizer: {type(tokenizer).__name__} is not a fast one; post-processing needs "
            f"its offset mappings. {fix}"
        )
    if len(tokenizer.get_vocab()) <= len(set(tokenizer.all_special_ids)):
        # transformers 5 builds an empty tokenizer when a directory has no tokenizer files at all.
        raise DataError(
            f"{where}: no usable tokenizer: it has no vocabulary besides its special tokens. {fix}"
        )
    _apply_lower_case(tokenizer, do_lower_case)
    return tokenizer


def _apply_lower_case(tokenizer, do_lower_case: bool) -> None:
    """transformers 4.57 keeps whatever lowercasing a tokenizer.json holds and ignores
    do_lower_case (5.x applies it): set it on the backend's normalizer, so both ends of the
    supported range tokenize alike. Families without the setting (RoBERTa) are left alone."""
    if not hasattr(tokenizer, "do_lower_case"):
        return
    from tokenizers import Tokenizer

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    before = json.dumps(state["normalizer"], sort_keys=True)
    norm = state["normalizer"]
    if norm is not None and norm["type"] == "BertNormalizer":
        norm["lowercase"] = do_lower_case
    else:
        steps = norm["normalizers"] if norm and norm["type"] == "Sequence" else [norm] * bool(norm)
        steps = [s for s in steps if s["type"] != "Lowercase"]
        state["normalizer"] = {
            "type": "Sequence",
            "normalizers": steps + [{"type": "Lowercase"}] * do_lower_case,
        }
    if json.dumps(state["normalizer"], sort_keys=True) != before:
        logger.info(
            "%s tokenizer: do_lower_case=%s applied", type(tokenizer).__name__, do_lower_case
        )
        tokenizer.backend_tokenizer.normalizer = Tokenizer.from_str(json.dumps(state)).normalizer
        tokenizer.do_lower_case = do_lower_case


def load_model_config(name: str):
    """AutoConfig.from_pretrained, with an unreadable or missing config.json as a DataError."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise DataError(
            f"{name}: cannot read the model's config.json: {str(err).splitlines()[0]}"
        ) from err


def load_pretrained_model(name: str, **kwargs):
    """AutoModelForQuestionAnswering.from_pretrained, with a missing or incomplete model directory
    (no config, no weights) or an unreachable hub named as a UserError. A ValueError from the model
    itself (an attention implementation it lacks) passes through."""
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    def error(err):
        what = (
            f" (it has: {', '.join(sorted(os.listdir(name))) or 'nothing'})"
            if os.path.isdir(name)
            else ""
        )
        return UserError(
            f"{name}{what}: cannot load the model: {str(err).splitlines()[0]}. A model directory needs "
            "config.json and weights (model.safetensors) as save_pretrained writes them; a hub name "
            "needs network access or the model in the Hugging Face cache"
        )

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise error(err) from err
    try:
        return AutoModelForQuestionAnswering.from_pretrained(name, config=config, **kwargs)
    except OSError as err:
        raise error(err) from err


def feature_spec(hp: dict, model_type: Optional[str], type_vocab_size: int = 0) -> FeatureSpec:
    family = constants.MODEL_FAMILIES.get(model_type)
    if family is None:
        logger.warning(
            "model type %r is not in constants.MODEL_FAMILIES; segment ids %s",
            model_type,
            "used" if type_vocab_size > 1 else "not used",
        )
    return FeatureSpec(
        hp["max_seq_length"],
        hp["doc_stride"],
        hp["max_query_length"],
        token_type_ids=family["token_type_ids"] if family else type_vocab_size > 1,
    )


def squad_settings(hp: dict, config, metrics: Optional[dict] = None, threshold="tuned") -> dict:
    """The feature and post-processing settings a model directory carries (config.json's
    `squad_settings`), so predict.py and its pipeline answer as evaluation did. The no-answer
    threshold is, by default, the one that maximized F1 on the validation `metrics` came from
    (best_f1_thresh, as SQuAD 2.0 practice tunes it); "config" keeps the config's, a number sets it.
    `null_score_diff_threshold_source` says which."""
    keys = (
        "max_seq_length",
        "doc_stride",
        "max_query_length",
        "n_best_size",
        "max_answer_length",
        "null_score_diff_threshold",
        "do_lower_case",
    )
    spec = feature_spec(hp, config.model_type, getattr(config, "type_vocab_size", 0))
    out = {**{k: hp[k] for k in keys}, "token_type_ids": spec.token_type_ids}
    configured = hp["null_score_diff_threshold"]
    if threshold == "tuned" and metrics and "best_f1_thresh" in metrics:
        out["null_score_diff_threshold"] = float(metrics["best_f1_thresh"])
        source = (
            f"tuned on the validation after batch {metrics.get('batches', '?')}: F1 {metrics['best_f1']:.2f} "
            f"there, {metrics['f1']:.2f} at the config's {configured}"
        )
    elif threshold in ("tuned", "config"):
        source = "the config's" + (
            "" if threshold == "config" else " (no validation metrics to tune it on)"
        )
    else:
        out["null_score_diff_threshold"] = float(threshold)
        source = "given when exported"
    out["null_score_diff_threshold_source"] = source
    return out


def save_model(name: str, out_dir: str) -> str:
    """Download (or copy) a model and its tokenizer into `out_dir`, published atomically."""
    from transformers import AutoModelForQuestionAnswering

    with files.atomic_dir(out_dir) as tmp:
        AutoModelForQuestionAnswering.from_pretrained(name).save_pretrained(tmp)
        load_tokenizer(name).save_pretrained(tmp)
    return os.path.abspath(out_dir)


def load_model(hp: Dict[str, Any]) -> torch.nn.Module:
    """The QA model to train, through the Auto classes, with PyTorch's fused
    scaled_dot_product_attention where the architecture supports it (ALBERT does)."""
    name = hp["pretrained_model_name"]
    try:
        model = load_pretrained_model(name, attn_implementation="sdpa")
    except (ValueError, ImportError) as err:
        logger.warning(
            "%s: no scaled_dot_product_attention support (%s); using eager attention", name, err
        )
        model = load_pretrained_model(name, attn_implementation="eager")
    logger.info("attention implementation: %s", model.config._attn_implementation)
    if hp.get("gradient_checkpointing"):
        enable_gradient_checkpointing(model)
    return model


def gradient_checkpointing_mode(config) -> Optional[str]:
    """How activation checkpointing is done for a model with this config: "transformers" where its
    QA class supports it (BERT, RoBERTa, ELECTRA, DistilBERT, ...), "albert" for ALBERT, whose
    class does not (transformers 4.57 and 5.23: "does not support activation checkpointing"), by
    checkpointing each call of its shared layer group; None where neither applies. Decided from the
    config and the class alone, before any weights load."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_QUESTION_ANSWERING_MAPPING

    try:
        cls = MODEL_FOR_QUESTION_ANSWERING_MAPPING[type(config)]
    except KeyError:
        cls = None
    if cls is not None and getattr(cls, "supports_gradient_checkpointing", False):
        return "transformers"
    if config.model_type == "albert":
        return "albert"
    return None


def check_gradient_checkpointing(hp: Dict[str, Any]) -> None:
    """Refuse `gradient_checkpointing: true` for a model it cannot apply to, from the model's
    config.json only: before features are built or weights loaded."""
    if not hp.get("gradient_checkpointing"):
        return
    name = hp["pretrained_model_name"]
    config = load_model_config(name)
    if gradient_checkpointing_mode(config) is None:
        raise ConfigError(
            [
                f"hyperparameters.gradient_checkpointing: true, but {name} is a "
                f"{config.model_type!r} model, which transformers {_transformers_version()} cannot "
                "checkpoint (nor can this project: it does so for ALBERT); set it to false"
            ]
        )


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute activations in the backward pass instead of keeping them (non-reentrant
    torch.utils.checkpoint, which restores the RNG state, so dropout masks repeat exactly)."""
    mode = gradient_checkpointing_mode(model.config)
    if mode == "transformers":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif mode == "albert":
        groups = [m for m in model.modules() if type(m).__name__ == "AlbertLayerGroup"]
        if not groups:
            raise AssertionError("an ALBERT model without AlbertLayerGroup modules")
        for group in groups:
            group.forward = _checkpointed(group)
    else:
        raise AssertionError(model.config.model_type)  # check_gradient_checkpointing refused it
    logger.info("gradient checkpointing: %s", mode)


def _checkpointed(module: torch.nn.Module):
    """module.forward, recomputed in the backward pass when training. ALBERT calls its one layer
    group once per layer (12 times in xxlarge), so each call keeps only its input."""
    forward = module.forward

    def run(*args, **kwargs):
        if module.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    return run


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def checkpoint_model_source(checkpoint_dir: str, hp: Dict[str, Any]) -> str:
    """Where a checkpoint's model config and tokenizer come from: its own `hf/`
    (callbacks.CheckpointExtras), or, in checkpoints without one, the model training started from."""
    hf = os.path.join(checkpoint_dir, "hf")
    return hf if os.path.isfile(os.path.join(hf, "config.json")) else hp["pretrained_model_name"]


def checkpoint_model(source: str) -> torch.nn.Module:
    """A checkpoint's model before its weights are loaded: built from the config at `source`
    (checkpoint_model_source), in eval mode. It loads the state dict of a distributed run as it is:
    DistributedDataParallel saved the weights under "module."-prefixed names."""
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(source))
    model._register_load_state_dict_pre_hook(
        lambda state, *_: torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(
            state, "module."
        )
    )
    return model.eval()


def load_checkpoint(checkpoint_dir: str) -> Tuple[torch.nn.Module, Any, Dict[str, Any]]:
    """(model, tokenizer, hyperparameters) from a Determined checkpoint directory written by this trial."""
    state_path = os.path.join(checkpoint_dir, "state_dict.pth")
    if not os.path.isfile(state_path):
        raise UserError(
            f"{checkpoint_dir}: no state_dict.pth; pass a Determined checkpoint directory "
            "(det checkpoint download UUID) or an exported model directory"
        )
    try:
        with open(os.path.join(checkpoint_dir, "load_data.json")) as f:
            # Only the model's settings matter here: a checkpoint written under older rules still loads.
            hp = settings.hyperparameters(json.load(f)["hparams"] or {}, problems=[])
        source = checkpoint_model_source(checkpoint_dir, hp)
        model = checkpoint_model(source)
        # Before torch 2.6 there is no allowlist for the NumPy RNG state Determined saves beside the
        # weights (WEIGHTS_ONLY_LOADS): there, as in Determined's own loads, torch.load unpickles.
        state = torch.load(state_path, map_location="cpu", weights_only=WEIGHTS_ONLY_LOADS)
        model.load_state_dict(state["models_state_dict"][0])
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        RuntimeError,
        pickle.UnpicklingError,
        ConfigError,
    ) as err:
        raise UserError(
            f"{checkpoint_dir}: not a readable checkpoint of this trial "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    return model, load_tokenizer(source, hp["do_lower_case"]), hp


def validation_metrics(checkpoint_dir: str) -> Optional[Dict[str, Any]]:
    """The metrics of the validation a checkpoint carries the predictions of, if any."""
    try:
        with open(
            os.path.join(checkpoint_dir, "predictions", "metrics.json"), encoding="utf-8"
        ) as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None
