"""SQuAD JSON (path | https:// | s3://) → validated examples → tokenized features → the shared
feature cache → datasets the trial loads.

Each step is a plain function a test can call on its own:

    fetch(source, cache_dir)                  -> local path of a verified copy
    read_squad(path, split, skip_invalid)     -> Examples
    featurize(examples, tokenizer, ...)       -> dict of NumPy arrays
    load_or_build_features(...)               -> Features (memory-mapped arrays + metadata)
    FeatureDataset / Collator                 -> what the DataLoader serves
"""
import argparse
import contextlib
import dataclasses
import errno
import glob
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Tuple

import filelock
import numpy as np
import torch

import constants
import settings
from settings import UserError
from qa_features import Collator, Examples, FeatureSpec, featurize_batch  # noqa: F401  (data.Examples etc.)

logger = logging.getLogger("data")


class DataError(UserError, ValueError):
    """Bad input data: the message names the file, the record and what to do (exit 1)."""


# ---------------------------------------------------------------------------------------------
# fetch: path | https:// | s3:// → a verified local file
# ---------------------------------------------------------------------------------------------

def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: str, source: str, expected: Optional[dict]) -> None:
    if expected is None:
        return
    size = os.path.getsize(path)
    if size != expected["bytes"]:
        raise DataError(f"{source}: downloaded {size} bytes, expected {expected['bytes']}; the file is "
                        "truncated or changed upstream. Delete it and retry, or pass a local copy.")
    digest = sha256_file(path)
    if digest != expected["sha256"]:
        raise DataError(f"{source}: sha256 {digest} does not match the known {expected['sha256']}. "
                        "Delete the cached copy and retry, or pass a local copy.")


def _download(source: str, tmp_path: str) -> None:
    if source.startswith("s3://"):
        import s3  # boto3's credential chain; AWS_ENDPOINT_URL points it at an S3-compatible store

        try:
            s3.download_file(source, tmp_path)
        except s3.S3Error as err:
            raise DataError(str(err)) from err
        return
    with urllib.request.urlopen(source, timeout=60) as response, open(tmp_path, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def _unreadable(name: str, err: OSError) -> DataError:
    """A data file that cannot be opened, as a DataError naming the reason and the fix."""
    if isinstance(err, FileNotFoundError):
        return DataError(f"{name}: no such file. Set data.train_file / data.validation_file to a "
                         "local path, an https:// URL or an s3:// URI.")
    if isinstance(err, IsADirectoryError):
        return DataError(f"{name}: is a directory, not a SQuAD JSON file. Give the path of the .json file.")
    if isinstance(err, PermissionError):
        return DataError(f"{name}: permission denied (reading as uid {os.getuid()}). Make it readable by the user "
                         "the job runs as (chmod a+r on the file, a+x on its directories), or copy it where that user can read it.")
    return DataError(f"{name}: cannot be read ({err.strerror or err}). Check the file and its filesystem, "
                     "or copy it elsewhere and point the config at the copy.")


def fetch(source: str, cache_dir: str, retries: int = 4) -> str:
    """A local path holding `source`. Remote files are streamed to a temporary file in
    `cache_dir/downloads`, verified against the known size and sha256 when the URL is known,
    then renamed into place; a verified copy already there is never fetched again, even from a
    read-only cache."""
    if "://" not in source:
        try:
            with open(source, "rb"):
                pass
        except OSError as err:
            raise _unreadable(source, err) from err
        return source
    if not source.startswith(("https://", "http://", "s3://")):
        raise DataError(f"{source}: unsupported scheme; use a local path, https:// or s3://.")
    expected = constants.KNOWN_DATASETS.get(source)
    downloads = os.path.join(cache_dir, "downloads")
    _make_cache_dir(downloads)
    # The name is derived from the URL's hash: no user-supplied string becomes a path component.
    dest = os.path.join(downloads, hashlib.sha256(source.encode()).hexdigest()[:32] + ".json")
    # Files with no registered checksum get one recorded at download, so a cached copy is always verified.
    record = dest + ".sha256.json"
    with _acquire(dest + ".lock", math.inf, dest) as locked:
        if os.path.isfile(dest):
            try:
                known = expected
                if known is None and os.path.isfile(record):
                    with open(record) as f:
                        known = json.load(f)
                if known is None:
                    raise DataError(f"{source}: cached copy has no recorded checksum")
                _verify(dest, source, known)
                return dest
            except PermissionError as err:
                raise DataError(f"{err.filename} ({source}): permission denied reading the cached download (as uid "
                                f"{os.getuid()}). Make the cache readable by every user (chmod -R a+rX {downloads}), "
                                "or set data.cache_dir to a cache of your own.") from err
            except (ValueError, KeyError) as err:  # DataError is a ValueError
                if not locked:
                    raise DataError(f"{dest} ({source}): {err}; {downloads} is read-only or not writable by this "
                                    f"user, so it cannot be downloaded again here. {_CACHE_FIX}") from err
                logger.warning("%s; downloading again", err)
        if not locked:
            raise DataError(f"{source}: no verified copy in {downloads}, which is read-only or not writable by "
                            f"this user, so it cannot be downloaded here. {_CACHE_FIX}")
        for attempt in range(retries):
            fd, tmp = tempfile.mkstemp(dir=downloads, prefix=".partial-")
            os.close(fd)
            try:
                logger.info("downloading %s (attempt %d/%d)", source, attempt + 1, retries)
                _download(source, tmp)
                _verify(tmp, source, expected)
                os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache's copy from other users
                if expected is None:
                    with open(record + ".tmp", "w") as f:
                        json.dump({"bytes": os.path.getsize(tmp), "sha256": sha256_file(tmp)}, f)
                    os.replace(record + ".tmp", record)
                os.replace(tmp, dest)
                return dest
            except (urllib.error.URLError, OSError, TimeoutError) as err:
                if attempt == retries - 1:
                    raise DataError(f"{source}: download failed after {retries} attempts ({err}). Check "
                                    "the network, or download it elsewhere and pass the local path.") from err
                time.sleep(2 ** attempt)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# parse + validate: SQuAD 1.1 / 2.0 JSON → Examples
# ---------------------------------------------------------------------------------------------

def _answer_problem(answer, i: int, context: str, exact: bool) -> Optional[str]:
    """What is wrong with answers[i] of a question, or None. `exact`: it must sit at its answer_start."""
    if not isinstance(answer, dict):
        return f"answers[{i}] is not an object with 'text' and 'answer_start'"
    text, start = answer.get("text"), answer.get("answer_start")
    if not isinstance(text, str) or not text.strip():
        return f"answers[{i}]: 'text' must be a non-empty string, not {text!r}"
    # bool is an int in Python; a negative start would slice from the end of the context.
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        return f"answers[{i}]: 'answer_start' must be a non-negative integer, not {start!r}"
    if start + len(text) > len(context):
        return (f"answers[{i}]: answer_start {start} plus the answer's {len(text)} characters runs past the end "
                f"of the context ({len(context)} characters)")
    if exact and context[start:start + len(text)] != text:
        return (f"answer_start {start} does not point at the answer text {text!r} "
                f"(the context there reads {context[start:start + len(text)]!r})")
    return None


def read_squad(path: str, split: str, skip_invalid: bool = False, source: Optional[str] = None) -> Examples:
    """Parse and validate a SQuAD 1.1 or 2.0 file. `split` is "train" (the first answer must sit at
    its answer_start: it becomes the label) or "validation". Invalid records (questions, paragraphs,
    articles) raise DataError naming the file and the record, or with `skip_invalid` (only the bool
    True) are skipped, counted and logged."""
    name = source or path
    try:
        with open(path, "rb") as f:
            raw = f.read()
        dataset = json.loads(raw.decode("utf-8"))
    except OSError as err:
        raise _unreadable(name, err) from err
    except UnicodeDecodeError as err:
        raise DataError(f"{name}: not valid UTF-8 at byte {err.start}. Re-save the file as UTF-8.") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{name}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}.") from err
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise DataError(f"{name}: expected a SQuAD file, an object with a 'data' list of articles.")

    ex = Examples([], [], [], [], [], [], [])
    seen = set()

    def bad(where, problem):
        message = f"{name}: {where}: {problem}"
        if skip_invalid is not True:
            raise DataError(message + ". Fix the record, or set data.skip_invalid_examples: true to skip it.")
        logger.warning("skipping %s", message)
        ex.skipped += 1

    def found(obj):
        return f"its keys: {', '.join(map(repr, obj)) or 'none'}" if isinstance(obj, dict) else f"a {type(obj).__name__}"

    for a, article in enumerate(dataset["data"]):
        # A misspelled key ('paragraph', 'qa') must not make its questions vanish.
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            title = article.get("title") if isinstance(article, dict) else None
            bad(f"article data[{a}]" + (f" ({title!r})" if isinstance(title, str) else ""),
                f"expected an object with a 'paragraphs' list, found {found(article)}")
            continue
        for p, paragraph in enumerate(article["paragraphs"]):
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                bad(f"paragraph {where}", f"expected an object with 'context' and a 'qas' list, found {found(paragraph)}")
                continue
            context, qas = paragraph.get("context"), paragraph["qas"]
            if not isinstance(context, str) or not context.strip():
                for q, qa in enumerate(qas):
                    qid = qa.get("id") if isinstance(qa, dict) else None
                    bad(f"question {qid!r}" if isinstance(qid, str) and qid else f"question {where}.qas[{q}]",
                        "empty or missing context")
                continue
            ctx_idx = len(ex.contexts)
            ex.contexts.append(context)
            for q, qa in enumerate(qas):
                qid = qa.get("id") if isinstance(qa, dict) else None
                if not isinstance(qid, str) or not qid:
                    bad(f"question {where}.qas[{q}]", "missing question id (a non-empty string)"
                        if isinstance(qa, dict) else f"expected a question object, found {found(qa)}")
                    continue
                if qid in seen:
                    bad(f"question {qid!r}", "duplicate question id")
                    continue
                question, answers = qa.get("question"), qa.get("answers", [])
                impossible = qa.get("is_impossible", False)  # absent in SQuAD 1.1: answerable
                if not isinstance(question, str) or not question.strip():
                    problem = "empty or missing question"
                elif not isinstance(impossible, bool):  # bool("false") is True
                    problem = f"'is_impossible' must be true or false, not {impossible!r}"
                elif not isinstance(answers, list):
                    problem = f"'answers' must be a list, not {found(answers)}"
                elif impossible and answers:
                    problem = "'is_impossible' is true but 'answers' is not empty (SQuAD 2.0 keeps an unanswerable " \
                              "question's spans in 'plausible_answers')"
                elif not impossible and not answers:
                    problem = "answerable question ('is_impossible' false or absent) without answers"
                else:
                    problem = next(filter(None, (_answer_problem(ans, i, context, split == "train" and i == 0)
                                                 for i, ans in enumerate(answers))), None)
                if problem:
                    bad(f"question {qid!r}", problem)
                    continue
                start, text = (-1, "") if impossible else (answers[0]["answer_start"], answers[0]["text"])
                seen.add(qid)
                ex.ids.append(qid)
                ex.questions.append(question.strip())
                ex.context_index.append(ctx_idx)
                ex.answer_start.append(start)
                ex.answer_text.append(text)
                ex.is_impossible.append(impossible)
    if ex.skipped:
        logger.warning("%s: skipped %d invalid records (questions, paragraphs or articles), kept %d questions",
                       name, ex.skipped, len(ex))
    if not ex.ids:
        raise DataError(f"{name}: no usable questions found.")
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


def featurize(examples: Examples, tokenizer, spec: FeatureSpec, training: bool, workers: int = 1,
              batch_size: int = 1000, tmp_dir: Optional[str] = None) -> Dict[str, np.ndarray]:
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
        _WORK.update(examples=examples, tokenizer=tokenizer, spec=spec, training=training, dir=tmp)
        try:
            with contextlib.ExitStack() as stack:
                if workers > 1 and len(bounds) > 1:
                    pool = stack.enter_context(multiprocessing.get_context("fork").Pool(
                        workers, initializer=_worker_init, initargs=(os.getpid(),)))
                    results = pool.imap_unordered(_featurize_chunk, bounds)
                else:
                    results = map(_featurize_chunk, bounds)
                for questions, _ in results:
                    done += questions
                    rate = done / max(time.time() - started, 1e-9)
                    logger.info("featurized %d/%d questions (%.0f/s, ETA %.0fs)", done, n, rate, (n - done) / rate)
        finally:
            _WORK.clear()
        names = sorted({f.split(".")[1] for f in os.listdir(tmp)})
        return {name: np.concatenate([np.load(os.path.join(tmp, f"{lo:010d}.{name}.npy")) for lo, _ in bounds])
                for name in names}


# ---------------------------------------------------------------------------------------------
# cache: content-addressed entries, one builder per key, atomic publish, verified loads
# ---------------------------------------------------------------------------------------------

def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the tokenizer's serialized state (vocabulary, normalizer, special tokens), so two
    different tokenizers sharing a name never share features."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    # Truncation and padding are per-call settings that tokenizing leaves behind, not identity.
    state.pop("truncation", None)
    state.pop("padding", None)
    state["class"] = [type(tokenizer).__name__, tokenizer.all_special_tokens, tokenizer.padding_side]
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def cache_key(data_sha256: str, tokenizer, spec: FeatureSpec, do_lower_case: bool, split: str,
              max_examples: Optional[int] = None) -> str:
    fields = {"data": data_sha256, "tokenizer": tokenizer_fingerprint(tokenizer), "split": split,
              "do_lower_case": do_lower_case, "format": constants.FEATURE_FORMAT_VERSION,
              "max_examples": max_examples, **dataclasses.asdict(spec)}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:40]


@dataclasses.dataclass
class Features:
    """Loaded cache entry: arrays (memory-mapped) and, for validation, the example metadata
    post-processing needs (ids, contexts) without re-tokenizing."""
    arrays: Dict[str, np.ndarray]
    manifest: dict
    example_ids: Optional[List[str]] = None
    example_contexts: Optional[List[str]] = None

    def __len__(self) -> int:
        return len(self.arrays["input_ids"])


def _write_entry(tmp: str, arrays: Dict[str, np.ndarray], examples: Examples, meta: dict) -> dict:
    files = {}
    for name, arr in arrays.items():
        path = os.path.join(tmp, name + ".npy")
        np.save(path, arr, allow_pickle=False)
        files[name] = {"dtype": str(arr.dtype), "shape": list(arr.shape), "sha256": sha256_file(path),
                       "bytes": os.path.getsize(path)}
    used = sorted(set(examples.context_index))
    remap = {c: i for i, c in enumerate(used)}
    with open(os.path.join(tmp, "examples.json"), "w") as f:
        json.dump({"ids": examples.ids, "context_index": [remap[c] for c in examples.context_index],
                   "contexts": [examples.contexts[c] for c in used]}, f)
    manifest = {**meta, "files": files, "examples_sha256": sha256_file(os.path.join(tmp, "examples.json")),
                "num_examples": len(examples), "num_features": int(len(arrays["input_ids"])),
                "skipped_examples": examples.skipped, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "versions": {"numpy": np.__version__, "torch": torch.__version__}}
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    for name in os.listdir(tmp):
        with open(os.path.join(tmp, name), "rb") as f:
            os.fsync(f.fileno())
    return manifest


def _load_entry(entry: str) -> Features:
    """Load and verify an entry; raises DataError when anything is missing or corrupt."""
    try:
        with open(os.path.join(entry, "manifest.json")) as f:
            manifest = json.load(f)
        arrays = {}
        for name, info in manifest["files"].items():
            path = os.path.join(entry, name + ".npy")
            if os.path.getsize(path) != info["bytes"] or sha256_file(path) != info["sha256"]:
                raise DataError(f"{path}: size or checksum differs from the manifest")
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if str(arr.dtype) != info["dtype"] or list(arr.shape) != info["shape"]:
                raise DataError(f"{path}: dtype/shape differs from the manifest")
            arrays[name] = arr
        examples_path = os.path.join(entry, "examples.json")
        if sha256_file(examples_path) != manifest["examples_sha256"]:
            raise DataError(f"{examples_path}: checksum differs from the manifest")
        with open(examples_path) as f:
            examples = json.load(f)
    except PermissionError as err:  # another user's entry: not corrupt, so the caller leaves it alone
        raise DataError(f"{err.filename}: permission denied reading the cache entry (as uid {os.getuid()}). Make "
                        f"the cache readable by every user that trains (chmod -R a+rX {os.path.dirname(entry)}), "
                        "or set data.cache_dir to a cache of your own.") from err
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"cache entry {entry} is unreadable or corrupt: {err}") from err
    contexts = examples["contexts"]
    return Features(arrays, manifest, examples["ids"], [contexts[c] for c in examples["context_index"]])


_CACHE_FIX = ("Build the cache with `data.py prepare --config CONFIG` as a user or on a machine that can write "
              "it, or make it writable, or set data.cache_dir / data.bind_mount_path to a writable directory.")


def _make_cache_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)  # an existing directory is fine, even read-only
    except OSError as err:
        raise DataError(f"{path}: cannot create the cache directory ({err.strerror}). {_CACHE_FIX}") from err


@contextlib.contextmanager
def _acquire(lock_path: str, timeout: float, what: str):
    """The build lock, logging while another process holds it; yields True once held, or False when
    the lock file cannot be created or opened because its directory is read-only or another user's:
    the caller may then only read complete entries (published by an atomic rename, never changed).
    filelock uses flock(): the OS releases it when its holder dies, however it dies, so a crashed
    builder never blocks others."""
    lock = filelock.FileLock(lock_path)
    started, locked = time.time(), False
    while True:
        waited = time.time() - started
        try:
            lock.acquire(timeout=max(0.0, min(30.0, timeout - waited)))
            locked = True
            break
        except filelock.Timeout:
            waited = time.time() - started
            if waited >= timeout:
                raise
            logger.info("waiting for another process building %s (%.0fs of at most %.0fs)", what, waited, timeout)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            logger.warning("%s: cannot open the lock file (%s): the cache is read-only here, so only a complete "
                           "%s is used, without the lock", lock_path, err.strerror, what)
            break
    try:
        yield locked
    finally:
        if locked:
            lock.release()


def load_or_build_features(source: str, tokenizer, spec: FeatureSpec, split: str, cache_dir: str,
                           do_lower_case: bool = True, skip_invalid: bool = False,
                           lock_timeout: float = 3600, workers: int = 1,
                           max_examples: Optional[int] = None) -> Tuple[Features, str]:
    """Features for `source` (its first `max_examples` valid questions, when given), built at most
    once per key by whichever process gets the lock first; every other process (any rank, any
    trial, any host sharing `cache_dir`) waits and loads. Returns (features, "built" | "loaded")."""
    path = fetch(source, cache_dir)
    key = cache_key(sha256_file(path), tokenizer, spec, do_lower_case, split, max_examples)
    root = os.path.join(cache_dir, "features")
    _make_cache_dir(root)
    entry = os.path.join(root, key)
    read_only = (f"the cache directory {root} is read-only or not writable by this user, so the entry cannot be "
                 f"built here. {_CACHE_FIX}")
    try:
        with _acquire(entry + ".lock", lock_timeout, entry) as locked:
            if os.path.isdir(entry):
                try:
                    return _load_entry(entry), "loaded"
                except DataError as err:
                    if isinstance(err.__cause__, PermissionError):
                        raise
                    if not locked:
                        raise DataError(f"{err}; {read_only}") from err
                    aside = f"{entry}.corrupt-{int(time.time())}"
                    logger.error("%s; moving it to %s and rebuilding", err, aside)
                    os.replace(entry, aside)
            if not locked:
                raise DataError(f"{source}: no {split} features in the cache ({entry} is missing), and {read_only}")
            # Under the lock nobody else is building this key: temporary directories left by a
            # builder that died (kill -9, OOM, preemption) are debris.
            for stale in glob.glob(os.path.join(root, f".{key}.tmp-*")):
                shutil.rmtree(stale, ignore_errors=True)
            logger.info("building %s features for %s (cache key %s)", split, source, key)
            examples = read_squad(path, split, skip_invalid, source=source)
            if max_examples is not None and max_examples < len(examples):
                logger.info("%s: keeping the first %d of %d questions (data.max_%s_examples)", source, max_examples,
                            len(examples), "train" if split == "train" else "eval")
                examples = dataclasses.replace(examples, **{name: getattr(examples, name)[:max_examples] for name in (
                    "ids", "questions", "context_index", "answer_start", "answer_text", "is_impossible")})
            with atomic_dir(entry) as tmp:
                # The chunk files go inside the entry's temporary directory: debris a later build removes.
                arrays = featurize(examples, tokenizer, spec, training=(split == "train"), workers=workers, tmp_dir=tmp)
                _write_entry(tmp, arrays, examples, {"key": key, "source": source, "split": split,
                                                     "spec": dataclasses.asdict(spec)})
            return _load_entry(entry), "built"
    except filelock.Timeout as err:
        raise DataError(f"waited {lock_timeout:.0f}s for another process building {entry}; if no build is "
                        f"running, check the filesystem supports locks or raise data.cache_lock_timeout") from err


# ---------------------------------------------------------------------------------------------
# Dataset / collate
# ---------------------------------------------------------------------------------------------

class FeatureDataset(torch.utils.data.Dataset):
    """Serves feature indices; the Collator gathers whole batches from the memory-mapped arrays."""

    def __init__(self, features: Features):
        self.n = len(features)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class LengthBucketBatchSampler(torch.utils.data.Sampler):
    """Batches of features of similar length, so padding to each batch's longest feature wastes
    little. Each epoch: a seeded random permutation, cut into pools of `pool_batches` global
    batches, each pool sorted by length and cut into global batches, the global batch order
    shuffled, and each global batch dealt out as `replicas` consecutive per-rank batches (the way
    Determined's loader shards batches). So the global batches are the same on 1 or N ranks, every
    rank builds the same sequence, and a resumed run (which replays the sampler and skips what it
    trained) sees the same batches. Without `shuffle` (evaluation): all features sorted by length,
    in per-rank batches."""

    def __init__(self, lengths: np.ndarray, batch_size: int, shuffle: bool = True, seed: int = 0,
                 replicas: int = 1, pool_batches: int = 64):
        self.lengths, self.batch_size, self.shuffle, self.seed = np.asarray(lengths), batch_size, shuffle, seed
        self.replicas, self.global_size = replicas, batch_size * replicas
        self.pool = pool_batches * self.global_size
        self.epoch = 0

    def __len__(self) -> int:
        n, g = len(self.lengths), self.global_size
        if not self.shuffle:
            return math.ceil(n / self.batch_size)
        return (n // g + (n % g >= self.replicas)) * self.replicas

    def __iter__(self):
        n, bs, g = len(self.lengths), self.batch_size, self.global_size
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            yield from (order[i:i + bs].tolist() for i in range(0, n, bs))
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(n)
        for lo in range(0, n, self.pool):
            pool = order[lo:lo + self.pool]
            order[lo:lo + self.pool] = pool[np.argsort(self.lengths[pool], kind="stable")]
        for b in rng.permutation(math.ceil(n / g)):
            batch = order[b * g:(b + 1) * g]
            # Exactly `replicas` parts per global batch keeps every rank on its share; a last
            # global batch smaller than the number of ranks (at most replicas - 1 features) is dropped.
            if len(batch) >= self.replicas:
                yield from (part.tolist() for part in np.array_split(batch, self.replicas))


class QuestionShardedBatchSampler(torch.utils.data.Sampler):
    """Validation batches that keep all features of a question on one rank, so each rank can
    post-process its own questions: question q belongs to rank q % replicas; each rank's features,
    sorted by length, are cut into the same number of batches (at most `batch_size` each) and
    interleaved the way Determined's loader deals batches out (rank r gets batches r, r + replicas,
    ...). A rank with fewer features than batches fills the gap with a repeat of one of its own
    (or, owning none, of feature 0); `owned` tells the reducer which features to keep."""

    def __init__(self, lengths: np.ndarray, example_index: np.ndarray, batch_size: int, replicas: int = 1):
        self.replicas = replicas
        example_index = np.asarray(example_index)
        self.per_rank = [np.flatnonzero(example_index % replicas == r) for r in range(replicas)]
        lengths = np.asarray(lengths)
        self.per_rank = [f[np.argsort(lengths[f], kind="stable")] for f in self.per_rank]
        self.batches = max(1, max(math.ceil(len(f) / batch_size) for f in self.per_rank))

    def owned(self, rank: int) -> np.ndarray:
        """The features whose questions rank `rank` post-processes, sorted."""
        return np.sort(self.per_rank[rank])

    def __len__(self) -> int:
        return self.batches * self.replicas

    def __iter__(self):
        chunks = []
        for features in self.per_rank:
            parts = np.array_split(features, self.batches)
            fill = features[-1:] if len(features) else np.zeros(1, dtype=np.int64)
            chunks.append([p if len(p) else fill for p in parts])
        for b in range(self.batches):
            for rank in range(self.replicas):
                yield chunks[rank][b].tolist()


# ---------------------------------------------------------------------------------------------
# settings shared by the trial and the commands below
# ---------------------------------------------------------------------------------------------

def cache_root(data_conf: dict) -> str:
    """The feature cache root: the bind-mounted network filesystem when configured, so every rank
    and every later trial reuses one build."""
    if data_conf.get("use_bind_mount"):
        return data_conf["bind_mount_path"]
    return os.path.expanduser(data_conf.get("cache_dir") or "~/.cache/albert-squad")


def load_tokenizer(name: str, do_lower_case: bool = True):
    """The model's fast tokenizer (its offset mappings cut answers out of contexts). A SentencePiece
    model (ALBERT's spiece.model) is converted by transformers with the `sentencepiece` package."""
    from transformers import AutoTokenizer

    fix = ("A model directory needs tokenizer.json, or its family's vocabulary files with "
           "tokenizer_config.json (ALBERT: spiece.model); tokenizer.save_pretrained(DIR) writes them.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, do_lower_case=do_lower_case)
    except Exception as err:  # transformers' errors here are of many types and rarely name the file
        if not os.path.isdir(name):
            raise
        raise DataError(f"{name}: no usable tokenizer ({type(err).__name__}: {err}). The directory has: "
                        f"{', '.join(sorted(os.listdir(name))) or 'nothing'}. {fix}") from err
    where = f"{name} (it has: {', '.join(sorted(os.listdir(name))) or 'nothing'})" if os.path.isdir(name) else name
    if not tokenizer.is_fast:
        raise DataError(f"{where}: no usable tokenizer: {type(tokenizer).__name__} is not a fast one; post-processing needs "
                        f"its offset mappings. {fix}")
    if len(tokenizer.get_vocab()) <= len(set(tokenizer.all_special_ids)):
        # transformers 5 builds an empty tokenizer when a directory has no tokenizer files at all.
        raise DataError(f"{where}: no usable tokenizer: it has no vocabulary besides its special tokens. {fix}")
    return tokenizer


def load_model_config(name: str):
    """AutoConfig.from_pretrained, with an unreadable or missing config.json as a DataError."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise DataError(f"{name}: cannot read the model's config.json: {str(err).splitlines()[0]}") from err


def load_pretrained_model(name: str, **kwargs):
    """AutoModelForQuestionAnswering.from_pretrained, with a missing or incomplete model directory
    (no config, no weights) or an unreachable hub named as a UserError. A ValueError from the model
    itself (an attention implementation it lacks) passes through."""
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    def error(err):
        what = f" (it has: {', '.join(sorted(os.listdir(name))) or 'nothing'})" if os.path.isdir(name) else ""
        return UserError(f"{name}{what}: cannot load the model: {str(err).splitlines()[0]}. A model directory needs "
                         "config.json and weights (model.safetensors) as save_pretrained writes them; a hub name "
                         "needs network access or the model in the Hugging Face cache")

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
        logger.warning("model type %r is not in constants.MODEL_FAMILIES; segment ids %s", model_type,
                       "used" if type_vocab_size > 1 else "not used")
    return FeatureSpec(hp["max_seq_length"], hp["doc_stride"], hp["max_query_length"],
                       token_type_ids=family["token_type_ids"] if family else type_vocab_size > 1)


def squad_settings(hp: dict, config, metrics: Optional[dict] = None, threshold="tuned") -> dict:
    """The feature and post-processing settings a model directory carries (config.json's
    `squad_settings`), so predict.py and its pipeline answer as evaluation did. The no-answer
    threshold is, by default, the one that maximized F1 on the validation `metrics` came from
    (best_f1_thresh, as SQuAD 2.0 practice tunes it); "config" keeps the config's, a number sets it.
    `null_score_diff_threshold_source` says which."""
    keys = ("max_seq_length", "doc_stride", "max_query_length", "n_best_size", "max_answer_length",
            "null_score_diff_threshold", "do_lower_case")
    spec = feature_spec(hp, config.model_type, getattr(config, "type_vocab_size", 0))
    out = {**{k: hp[k] for k in keys}, "token_type_ids": spec.token_type_ids}
    configured = hp["null_score_diff_threshold"]
    if threshold == "tuned" and metrics and "best_f1_thresh" in metrics:
        out["null_score_diff_threshold"] = float(metrics["best_f1_thresh"])
        source = (f"tuned on the validation after batch {metrics.get('batches', '?')}: F1 {metrics['best_f1']:.2f} "
                  f"there, {metrics['f1']:.2f} at the config's {configured}")
    elif threshold in ("tuned", "config"):
        source = "the config's" + ("" if threshold == "config" else " (no validation metrics to tune it on)")
    else:
        out["null_score_diff_threshold"] = float(threshold)
        source = "given when exported"
    out["null_score_diff_threshold_source"] = source
    return out


def prepare(hp: dict, data_conf: dict, workers: Optional[int] = None) -> Tuple[dict, dict]:
    """Tokenizer + both splits' features for an experiment's settings: ({split: Features}, report)."""
    hp, data_conf = settings.hyperparameters(hp), settings.data(data_conf)
    name = hp["pretrained_model_name"]
    config = load_model_config(name)
    tokenizer = load_tokenizer(name, hp["do_lower_case"])
    spec = feature_spec(hp, config.model_type, getattr(config, "type_vocab_size", 0))
    features, report = {}, {}
    for split, source in (("train", data_conf["train_file"]), ("validation", data_conf["validation_file"])):
        f, status = load_or_build_features(
            source, tokenizer, spec, split, cache_root(data_conf), hp["do_lower_case"],
            skip_invalid=data_conf["skip_invalid_examples"], lock_timeout=data_conf["cache_lock_timeout"],
            workers=workers or data_conf.get("feature_workers") or os.cpu_count() or 1,
            max_examples=data_conf.get("max_train_examples" if split == "train" else "max_eval_examples"))
        features[split] = f
        report[split] = {"key": f.manifest["key"], "status": status, "examples": f.manifest["num_examples"],
                         "features": f.manifest["num_features"]}
    return features, {"tokenizer": tokenizer, "report": report}


@contextlib.contextmanager
def atomic_dir(out_dir: str):
    """Yields a temporary sibling directory that replaces `out_dir` only if the block completes,
    so a half-written directory is never mistaken for a finished one."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.abspath(out_dir))}.tmp-")
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_model(name: str, out_dir: str) -> str:
    """Download (or copy) a model and its tokenizer into `out_dir`, published atomically."""
    from transformers import AutoModelForQuestionAnswering

    with atomic_dir(out_dir) as tmp:
        AutoModelForQuestionAnswering.from_pretrained(name).save_pretrained(tmp)
        load_tokenizer(name).save_pretrained(tmp)
    return os.path.abspath(out_dir)


# ---------------------------------------------------------------------------------------------
# audit: how well do the training labels recover the gold answers?
# ---------------------------------------------------------------------------------------------

def audit(path: str, tokenizer, spec: FeatureSpec) -> dict:
    """Label coverage of a SQuAD file: for each answerable question, whether the context text under
    one of its labeled token spans (cut via offsets) equals the gold answer after SQuAD answer
    normalization (`recovered`) or exactly (`recovered_exact`); the rest with the reason. Also the
    labels that cannot be right whatever the answer: end before start, or a span of no text."""
    import squad_eval

    examples = read_squad(path, "validation")  # validation: bad answer_starts are reported, not fatal
    train = featurize(examples, tokenizer, spec, training=True)
    offsets = featurize(examples, tokenizer, spec, training=False)["offsets"]
    spans: Dict[int, List[str]] = {}
    start_after_end, empty_span = [], []
    for f, e in enumerate(train["example_index"]):
        s, t = int(train["start_positions"][f]), int(train["end_positions"][f])
        if s > 0:
            context = examples.contexts[examples.context_index[e]]
            cut = context[offsets[f, s, 0]:offsets[f, t, 1]]
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
        bad_start = context[start:start + len(text)] != text
        if not bad_start and any(squad_eval.normalize_answer(g) == squad_eval.normalize_answer(text) for g in got):
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
        unrecovered.append({"id": examples.ids[e], "answer": text, "labeled": got[:1], "reason": reason})
    return {"examples": len(examples), "features": int(len(train["input_ids"])), "answerable": len(answerable),
            "recovered": recovered, "recovered_exact": recovered_exact, "unrecovered": unrecovered,
            "labels_start_after_end": start_after_end, "labels_empty_span": empty_span}


def main(argv=None) -> None:
    parser = settings.ArgumentParser(description="SQuAD data commands.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="download and build the feature caches of a config, without training")
    p.add_argument("--config", required=True)
    p.add_argument("--workers", type=int, help="feature worker processes (default: every CPU core)")
    p.add_argument("--cache-dir", help="build the cache here instead (a cluster config's bind_mount_path is the "
                   "container's view: on a login node give the network filesystem's host path)")
    p.add_argument("--save-model", metavar="DIR", help="also save the model and tokenizer here (for nodes without "
                   "internet: then set hyperparameters.pretrained_model_name to DIR)")
    a = commands.add_parser("audit", help="label coverage report of a SQuAD file (JSON on the last line)")
    a.add_argument("squad_file")
    a.add_argument("--model", required=True, help="model name or directory (its tokenizer is used)")
    a.add_argument("--max-seq-length", type=int, default=384)
    a.add_argument("--doc-stride", type=int, default=128)
    a.add_argument("--max-query-length", type=int, default=64)
    a.add_argument("--no-lower-case", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
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
            info["report"]["model_dir"] = save_model(hparams["pretrained_model_name"], args.save_model)
        print(json.dumps(info["report"]))
    else:
        hp = settings.hyperparameters({"pretrained_model_name": args.model, "max_seq_length": args.max_seq_length,
                                       "doc_stride": args.doc_stride, "max_query_length": args.max_query_length,
                                       "global_batch_size": 1})
        model_type = load_model_config(args.model).model_type
        tokenizer = load_tokenizer(args.model, not args.no_lower_case)
        print(json.dumps(audit(args.squad_file, tokenizer, feature_spec(hp, model_type))))


if __name__ == "__main__":
    settings.run_command(main)
