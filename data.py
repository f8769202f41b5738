"""SQuAD records → validated examples → tokenized features → datasets the trial loads, and the
`prepare` / `audit` commands.

Each step is a plain function a test can call on its own:

    cache.fetch(source, cache_dir)            -> local path of a verified copy
    read_squad(path, split, skip_invalid)     -> Examples
    featurize(examples, tokenizer, ...)       -> dict of NumPy arrays
    load_or_build_features(...)               -> cache.Features (memory-mapped arrays + metadata)
    FeatureDataset / Collator                 -> what the DataLoader serves

    python data.py prepare --config CONFIG [--cache-dir DIR] [--save-model DIR]
    python data.py audit SQUAD_FILE --model MODEL [--skip-invalid]
"""

import concurrent.futures
import concurrent.futures.process
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import filelock
import numpy as np
import torch

import cache
import errors
import files
import models
import settings
import squad_file
from errors import DataError
from qa_features import (  # noqa: F401  (data.Examples etc.)
    Collator,
    Examples,
    FeatureSpec,
    featurize_batch,
)

logger = logging.getLogger("data")


# ---------------------------------------------------------------------------------------------
# parse + validate: SQuAD 1.1 / 2.0 JSON → Examples
# ---------------------------------------------------------------------------------------------


def read_squad(
    path: str,
    split: str,
    skip_invalid: bool = False,
    source: Optional[str] = None,
    advice: str = squad_file.TRAINING_ADVICE,
) -> Examples:
    """Parse and validate a SQuAD file in any accepted layout (squad_file.read: the one set of
    rules). `split` is "train" (the first answer must sit at its answer_start: it becomes the label)
    or "validation". Invalid records raise DataError naming the file, the record and `advice`, or
    with `skip_invalid` (only the bool True) are skipped, counted in questions and logged."""
    name = source or path
    try:
        records = squad_file.read(path, split, skip_invalid, advice, name)
    except OSError as err:
        raise cache.unreadable(name, err) from err
    return examples(records)


def examples(records: squad_file.Records) -> Examples:
    """The accepted questions as Examples (the first answer is the training label)."""
    # `skipped` counts records (articles, paragraphs, questions); the log says how many questions.
    ex = Examples([], [], records.contexts, [], [], [], [], skipped=records.skipped_records)
    for qa in records.questions:
        first = qa["answers"][0] if qa["answers"] and not qa["is_impossible"] else None
        ex.ids.append(qa["id"])
        ex.questions.append(qa["question"])
        ex.context_index.append(qa["context"])
        ex.answer_start.append(first["answer_start"] if first else -1)
        ex.answer_text.append(first["text"] if first else "")
        ex.is_impossible.append(qa["is_impossible"])
    return ex


# ---------------------------------------------------------------------------------------------
# featurize: Examples → token windows (qa_features.featurize_batch), in worker processes
# ---------------------------------------------------------------------------------------------

_WORK: dict = {}  # what forked feature workers inherit: examples, tokenizer, spec, split, chunk dir


def _worker_init(parent: int) -> None:
    """Keeps feature workers quiet when a build stops: Ctrl-C goes to the parent alone (it then
    terminates the pool), and on Linux a parent killed outright takes its workers with it, instead
    of leaving them to print BrokenPipeError tracebacks as they hand back results."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        pass
    if os.getppid() != parent:  # died before the prctl
        os._exit(0)


def _featurize_chunk(bounds: Tuple[int, int]) -> Tuple[int, int]:
    lo, hi = bounds
    w = _WORK
    arrays = featurize_batch(w["examples"], lo, hi, w["tokenizer"], w["spec"], w["training"])
    for name, arr in arrays.items():
        np.save(os.path.join(w["dir"], f"{lo:010d}.{name}.npy"), arr, allow_pickle=False)
    return hi - lo, len(arrays["input_ids"])


def featurize(
    examples: Examples,
    tokenizer,
    spec: FeatureSpec,
    training: bool,
    workers: int = 1,
    batch_size: int = 1000,
    tmp_dir: Optional[str] = None,
) -> Dict[str, np.ndarray]:
    """Tokenize question + context windows. Every feature has input_ids (padded with the pad id to
    max_seq_length), lengths, example_index and optionally token_type_ids; training features carry
    start/end token labels (the CLS index 0 when unanswerable or the answer is outside the
    window), validation features the character offsets of context tokens (-1 elsewhere).
    With workers > 1, batches are tokenized in forked worker processes that hand their arrays
    back as .npy files (no pickled data crosses the process boundary), in a directory under `tmp_dir`
    (default: the system's temporary directory)."""
    n = len(examples)
    bounds = [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
    started, done = time.time(), 0
    with tempfile.TemporaryDirectory(prefix="features-", dir=tmp_dir) as tmp:
        files.share(tmp)  # mkdtemp's 0700 would keep a group's next builder from removing it
        _WORK.update(examples=examples, tokenizer=tokenizer, spec=spec, training=training, dir=tmp)
        pool = None
        try:
            if workers > 1 and len(bounds) > 1:
                # Not multiprocessing.Pool: it replaces a worker killed alone (the OOM killer's
                # way) and waits forever for the chunk it held. The executor fails all at once.
                pool = concurrent.futures.ProcessPoolExecutor(
                    workers,
                    mp_context=multiprocessing.get_context("fork"),
                    initializer=_worker_init,
                    initargs=(os.getpid(),),
                )
                results = (
                    f.result()
                    for f in concurrent.futures.as_completed(
                        [pool.submit(_featurize_chunk, b) for b in bounds]
                    )
                )
            else:
                results = map(_featurize_chunk, bounds)
            for questions, _ in results:
                done += questions
                rate = done / max(time.time() - started, 1e-9)
                logger.info(
                    "featurized %d/%d questions (%.0f/s, ETA %.0fs)",
                    done,
                    n,
                    rate,
                    (n - done) / rate,
                )
        except concurrent.futures.process.BrokenProcessPool as err:
            raise DataError(
                f"a feature worker process died while tokenizing ({workers} workers); the likely "
                "cause is memory: the out-of-memory killer ends one worker at a time. Use fewer "
                "workers (`data.py prepare --workers N`, or data.feature_workers in the config) or "
                "give the job more memory. Nothing was added to the cache."
            ) from err
        finally:
            _WORK.clear()
            if pool is not None:
                # On an error or Ctrl-C: no waiting for chunks nobody will read.
                pool.shutdown(wait=True, cancel_futures=True)
        names = sorted({f.split(".")[1] for f in os.listdir(tmp)})
        return {
            name: np.concatenate(
                [np.load(os.path.join(tmp, f"{lo:010d}.{name}.npy")) for lo, _ in bounds]
            )
            for name in names
        }


def resolve_entry(
    source: str,
    tokenizer,
    spec: FeatureSpec,
    split: str,
    cache_dir: str,
    do_lower_case: bool = True,
    max_examples: Optional[int] = None,
) -> Tuple[str, str]:
    """(local path of `source`, its cache entry's directory): fetches and hashes the data file, the
    part of a load that one process per node does for all of them (prepare)."""
    path = cache.fetch(source, cache_dir)
    key = cache.cache_key(
        files.sha256_file(path), tokenizer, spec, do_lower_case, split, max_examples
    )
    return path, os.path.join(cache_dir, "features", key)


def load_or_build_features(
    source: str,
    tokenizer,
    spec: FeatureSpec,
    split: str,
    cache_dir: str,
    do_lower_case: bool = True,
    skip_invalid: bool = False,
    lock_timeout: float = 3600,
    workers: int = 1,
    max_examples: Optional[int] = None,
    resolved: Optional[Tuple[str, str]] = None,
) -> Tuple[cache.Features, str]:
    """Features for `source` (its first `max_examples` valid questions, when given), built at most
    once per key by whichever process gets the lock first; every other process (any rank, any
    trial, any host sharing `cache_dir`) waits and loads. `resolved`: resolve_entry's answer, when
    another process already fetched and hashed the file. Returns (features, "built" | "loaded").

    skip_invalid is not part of the key: an entry records how many records its build skipped,
    and a run that would refuse those records refuses the entry with the error it would have
    raised, so the same file is never tokenized twice for the two settings."""
    path, entry = resolved or resolve_entry(
        source, tokenizer, spec, split, cache_dir, do_lower_case, max_examples
    )
    features, status = _load_or_build_features(
        source,
        path,
        entry,
        tokenizer,
        spec,
        split,
        skip_invalid,
        lock_timeout,
        workers,
        max_examples,
    )
    skipped = features.manifest.get("skipped_examples", 0)
    if skipped and skip_invalid is not True:
        # Reading again (no tokenizing) names the first invalid record exactly as a build would.
        read_squad(path, split, False, source=source)
        raise DataError(
            f"{source}: its cached features skipped {skipped} invalid records; fix them, or set "
            "data.skip_invalid_examples: true."
        )
    return features, status


def _load_or_build_features(
    source: str,
    path: str,
    entry: str,
    tokenizer,
    spec: FeatureSpec,
    split: str,
    skip_invalid: bool,
    lock_timeout: float,
    workers: int,
    max_examples: Optional[int],
) -> Tuple[cache.Features, str]:
    key = os.path.basename(entry)
    if os.path.isdir(entry):
        # An entry is complete and never changes once renamed into place, so loading it needs no
        # lock: N ranks load at once instead of one after another. Only a missing or corrupt
        # entry takes the lock, and is looked at again under it.
        try:
            return cache.load_entry(entry), "loaded"
        except DataError as err:
            if isinstance(err.__cause__, PermissionError):
                raise
            logger.warning("%s; looking again under the build lock", err)
    root = os.path.dirname(entry)
    cache.make_cache_dir(root)
    read_only = (
        f"the cache directory {root} is read-only or not writable by this user, so the entry cannot be "
        f"built here. {cache.CACHE_FIX}"
    )
    try:
        with cache.acquire(entry + ".lock", lock_timeout, entry) as locked:
            if os.path.isdir(entry):
                try:
                    return cache.load_entry(entry), "loaded"
                except DataError as err:
                    if isinstance(err.__cause__, PermissionError):
                        raise
                    if not locked:
                        raise DataError(f"{err}; {read_only}") from err
                    aside = f"{entry}.corrupt-{int(time.time())}"
                    logger.error("%s; moving it to %s and rebuilding", err, aside)
                    os.replace(entry, aside)
            if not locked:
                raise DataError(
                    f"{source}: no {split} features in the cache ({entry} is missing), and {read_only}"
                )
            # Under the lock nobody else is building this key: temporary directories left by a
            # builder that died (kill -9, OOM, preemption) are debris.
            cache.remove_debris(root, key)
            logger.info("building %s features for %s (cache key %s)", split, source, key)
            examples = read_squad(path, split, skip_invalid, source=source)
            if max_examples is not None and max_examples < len(examples):
                logger.info(
                    "%s: keeping the first %d of %d questions (data.max_%s_examples)",
                    source,
                    max_examples,
                    len(examples),
                    "train" if split == "train" else "eval",
                )
                examples = dataclasses.replace(
                    examples,
                    **{
                        name: getattr(examples, name)[:max_examples]
                        for name in (
                            "ids",
                            "questions",
                            "context_index",
                            "answer_start",
                            "answer_text",
                            "is_impossible",
                        )
                    },
                )
            with files.atomic_dir(entry) as tmp:
                # The chunk files go inside the entry's temporary directory: debris a later build removes.
                arrays = featurize(
                    examples,
                    tokenizer,
                    spec,
                    training=(split == "train"),
                    workers=workers,
                    tmp_dir=tmp,
                )
                cache.write_entry(
                    tmp,
                    arrays,
                    examples,
                    {
                        "key": key,
                        "source": source,
                        "split": split,
                        "spec": dataclasses.asdict(spec),
                    },
                )
            return cache.load_entry(entry), "built"
    except filelock.Timeout as err:
        raise DataError(
            f"waited {lock_timeout:.0f}s for another process building {entry}; if no build is "
            f"running, check the filesystem supports locks or raise data.cache_lock_timeout"
        ) from err


# ---------------------------------------------------------------------------------------------
# Dataset / collate
# ---------------------------------------------------------------------------------------------


class FeatureDataset(torch.utils.data.Dataset):
    """Serves feature indices; the Collator gathers whole batches from the memory-mapped arrays."""

    def __init__(self, features: cache.Features):
        self.n = len(features)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def prepare(
    hp: dict, data_conf: dict, workers: Optional[int] = None, distributed=None
) -> Tuple[dict, dict]:
    """Tokenizer + both splits' features for an experiment's settings: ({split: Features}, report).

    `distributed` (Determined's DistributedContext; None for one process): the chief of each node
    alone fetches and hashes the data files and builds what is missing, while the node's other
    ranks wait for it (as Hugging Face's main_process_first); then every rank loads the entries it
    was told, at once and without the lock. One chief per node, not one per job, so a cache_dir
    local to each node works too."""
    hp, data_conf = settings.hyperparameters(hp), settings.data(data_conf)
    name = hp["pretrained_model_name"]
    config = models.load_model_config(name)
    tokenizer = models.load_tokenizer(name, hp["do_lower_case"])
    spec = models.feature_spec(hp, config.model_type, getattr(config, "type_vocab_size", 0))
    root = cache.cache_root(data_conf)
    splits = {"train": data_conf["train_file"], "validation": data_conf["validation_file"]}

    def load(split, resolved=None):
        return load_or_build_features(
            splits[split],
            tokenizer,
            spec,
            split,
            root,
            hp["do_lower_case"],
            skip_invalid=data_conf["skip_invalid_examples"],
            lock_timeout=data_conf["cache_lock_timeout"],
            workers=workers or data_conf.get("feature_workers") or os.cpu_count() or 1,
            max_examples=data_conf.get(
                "max_train_examples" if split == "train" else "max_eval_examples"
            ),
            resolved=resolved,
        )

    built: dict = {}
    resolved: dict = {}
    shared = distributed is not None and distributed.local_size > 1
    if not shared or distributed.local_rank == 0:
        own = time.process_time() + cache.WAITED["lock"]
        try:
            for split, source in splits.items():
                resolved[split] = resolve_entry(
                    source,
                    tokenizer,
                    spec,
                    split,
                    root,
                    hp["do_lower_case"],
                    data_conf.get(
                        "max_train_examples" if split == "train" else "max_eval_examples"
                    ),
                )
                if not os.path.isdir(resolved[split][1]):
                    built[split] = load(split, resolved[split])
        except Exception as err:
            if shared:  # the other ranks are waiting for an answer: tell them, then stop here too
                distributed.broadcast_local({"error": f"{type(err).__name__}: {err}"})
            raise
        if shared:
            own = time.process_time() + cache.WAITED["lock"] - own
            distributed.broadcast_local({**resolved, "chief_own_s": own})
    else:
        started = time.time()
        resolved = distributed.broadcast_local()
        cache.WAITED["barrier"] += time.time() - started
        cache.WAITED["chief_own"] += resolved.get("chief_own_s", 0.0)
        if "error" in resolved:
            raise DataError(
                f"the data could not be prepared on this node's chief rank ({resolved['error']}); "
                "its log has the details"
            )
    features, report = {}, {}
    for split in splits:
        f, status = built.get(split) or load(split, tuple(resolved[split]))
        features[split] = f
        report[split] = {
            "key": f.manifest["key"],
            "status": status,
            "examples": f.manifest["num_examples"],
            "features": f.manifest["num_features"],
        }
    return features, {
        "tokenizer": tokenizer,
        "report": report,
        "paths": {split: resolved[split][0] for split in splits},
    }


# ---------------------------------------------------------------------------------------------
# audit: how well do the training labels recover the gold answers?
# ---------------------------------------------------------------------------------------------


def audit(path: str, tokenizer, spec: FeatureSpec, skip_invalid: bool = False) -> dict:
    """Label coverage of a SQuAD file: for each answerable question, whether the context text under
    one of its labeled token spans (cut via offsets) equals the gold answer after SQuAD answer
    normalization (`recovered`) or exactly (`recovered_exact`); the rest with the reason. Also the
    labels that cannot be right whatever the answer: end before start, or a span of no text."""
    import squad_eval

    # validation: bad answer_starts are reported, not fatal
    examples = read_squad(path, "validation", skip_invalid, advice=squad_file.COMMAND_ADVICE)
    train = featurize(examples, tokenizer, spec, training=True)
    offsets = featurize(examples, tokenizer, spec, training=False)["offsets"]
    spans: Dict[int, List[str]] = {}
    start_after_end, empty_span = [], []
    for f, e in enumerate(train["example_index"]):
        s, t = int(train["start_positions"][f]), int(train["end_positions"][f])
        if s > 0:
            context = examples.contexts[examples.context_index[e]]
            cut = context[offsets[f, s, 0] : offsets[f, t, 1]]
            spans.setdefault(int(e), []).append(cut)
            if s > t:
                start_after_end.append(examples.ids[e])
            elif not cut.strip():
                empty_span.append(examples.ids[e])
    answerable = [e for e in range(len(examples)) if not examples.is_impossible[e]]
    recovered = recovered_exact = 0
    unrecovered = []
    window = spec.max_seq_length - spec.max_query_length - 3
    for e in answerable:
        text, start = examples.answer_text[e], examples.answer_start[e]
        context = examples.contexts[examples.context_index[e]]
        got = spans.get(e, [])
        bad_start = context[start : start + len(text)] != text
        if not bad_start and any(
            squad_eval.normalize_answer(g) == squad_eval.normalize_answer(text) for g in got
        ):
            recovered += 1
            recovered_exact += text in got
            continue
        if bad_start:
            reason = "bad answer_start"
        elif not got and len(tokenizer(text, add_special_tokens=False)["input_ids"]) > window:
            reason = "answer longer than a window"
        elif not got:
            reason = "answer in no window"
        else:
            reason = "tokenization boundary"
        unrecovered.append(
            {"id": examples.ids[e], "answer": text, "labeled": got[:1], "reason": reason}
        )
    return {
        "examples": len(examples),
        "skipped_records": examples.skipped,
        "features": int(len(train["input_ids"])),
        "answerable": len(answerable),
        "recovered": recovered,
        "recovered_exact": recovered_exact,
        "unrecovered": unrecovered,
        "labels_start_after_end": start_after_end,
        "labels_empty_span": empty_span,
    }


def main(argv=None) -> None:
    parser = errors.ArgumentParser(description="SQuAD data commands.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser(
        "prepare", help="download and build the feature caches of a config, without training"
    )
    p.add_argument("--config", required=True)
    p.add_argument("--workers", type=int, help="feature worker processes (default: every CPU core)")
    p.add_argument(
        "--cache-dir",
        help="build the cache here instead (a cluster config's bind_mount_path is the "
        "container's view: on a login node give the network filesystem's host path)",
    )
    p.add_argument(
        "--save-model",
        metavar="DIR",
        help="also save the model and tokenizer here (for nodes without "
        "internet: then set hyperparameters.pretrained_model_name to DIR)",
    )
    a = commands.add_parser(
        "audit", help="label coverage report of a SQuAD file (JSON on the last line)"
    )
    a.add_argument("squad_file")
    a.add_argument("--model", required=True, help="model name or directory (its tokenizer is used)")
    a.add_argument("--max-seq-length", type=int, default=384)
    a.add_argument("--doc-stride", type=int, default=128)
    a.add_argument("--max-query-length", type=int, default=64)
    a.add_argument("--no-lower-case", action="store_true")
    a.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip invalid records (logged and counted) instead of stopping at the first",
    )
    args = parser.parse_args(argv)
    errors.setup_logging()
    if args.command == "prepare":
        if args.workers is not None and args.workers < 1:
            parser.error(f"--workers {args.workers}: give 1 or more")
        config = settings.load_config(args.config)
        if args.cache_dir and isinstance(config.get("data"), dict):
            config["data"].update(use_bind_mount=False, cache_dir=args.cache_dir)
        resolved = settings.resolve(config, args.config)
        hparams = resolved["hyperparameters"]
        _, info = prepare(hparams, resolved["data"], args.workers)
        if args.save_model:
            info["report"]["model_dir"] = models.save_model(
                hparams["pretrained_model_name"], args.save_model
            )
        print(json.dumps(info["report"]))
    else:
        hp = settings.hyperparameters(
            {
                "pretrained_model_name": args.model,
                "max_seq_length": args.max_seq_length,
                "doc_stride": args.doc_stride,
                "max_query_length": args.max_query_length,
                "global_batch_size": 1,
            }
        )
        model_type = models.load_model_config(args.model).model_type
        tokenizer = models.load_tokenizer(args.model, not args.no_lower_case)
        spec = models.feature_spec(hp, model_type)
        print(json.dumps(audit(args.squad_file, tokenizer, spec, args.skip_invalid)))


if __name__ == "__main__":
    errors.run_command(main)
