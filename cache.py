"""Fetching SQuAD files and the content-addressed feature cache, shared by every rank and trial.

    fetch(source, cache_dir)                   -> local path of a verified copy (path | https | s3)
    cache_key(data_sha256, tokenizer, spec...) -> the entry's name: what its features depend on
    write_entry / load_entry                   -> .npy arrays + manifest, verified on load, no pickle
    acquire(lock_path, timeout, what)          -> the one-builder-per-key file lock
    cache_root(data_conf)                      -> where the cache lives (bind mount or cache_dir)

data.load_or_build_features puts them together (read, featurize, cache).
"""

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import shutil
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional

import filelock
import numpy as np
import torch

import constants
import files
from errors import DataError
from qa_features import Examples, FeatureSpec

logger = logging.getLogger("cache")

CACHE_FIX = (
    "Build the cache with `data.py prepare --config CONFIG` as a user or on a machine that can write "
    "it, or make it writable, or set data.cache_dir / data.bind_mount_path to a writable directory."
)


def cache_root(data_conf: dict) -> str:
    """The feature cache root: the bind-mounted network filesystem when configured, so every rank
    and every later trial reuses one build."""
    if data_conf.get("use_bind_mount"):
        return data_conf["bind_mount_path"]
    return os.path.expanduser(data_conf.get("cache_dir") or "~/.cache/albert-squad")


def _verify(path: str, source: str, expected: Optional[dict]) -> None:
    if expected is None:
        return
    size = os.path.getsize(path)
    if size != expected["bytes"]:
        raise DataError(
            f"{source}: downloaded {size} bytes, expected {expected['bytes']}; the file is "
            "truncated or changed upstream. Delete it and retry, or pass a local copy."
        )
    digest = files.sha256_file(path)
    if digest != expected["sha256"]:
        raise DataError(
            f"{source}: sha256 {digest} does not match the known {expected['sha256']}. "
            "Delete the cached copy and retry, or pass a local copy."
        )


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


def unreadable(name: str, err: OSError) -> DataError:
    """A data file that cannot be opened, as a DataError naming the reason and the fix."""
    if isinstance(err, FileNotFoundError):
        return DataError(
            f"{name}: no such file. Set data.train_file / data.validation_file to a "
            "local path, an https:// URL or an s3:// URI."
        )
    if isinstance(err, IsADirectoryError):
        return DataError(
            f"{name}: is a directory, not a SQuAD JSON file. Give the path of the .json file."
        )
    if isinstance(err, PermissionError):
        return DataError(
            f"{name}: permission denied (reading as uid {os.getuid()}). Make it readable by the user "
            "the job runs as (chmod a+r on the file, a+x on its directories), or copy it where that user can read it."
        )
    return DataError(
        f"{name}: cannot be read ({err.strerror or err}). Check the file and its filesystem, "
        "or copy it elsewhere and point the config at the copy."
    )


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
            raise unreadable(source, err) from err
        return source
    if not source.startswith(("https://", "http://", "s3://")):
        raise DataError(f"{source}: unsupported scheme; use a local path, https:// or s3://.")
    expected = constants.KNOWN_DATASETS.get(source)
    downloads = os.path.join(cache_dir, "downloads")
    make_cache_dir(downloads)
    # The name is derived from the URL's hash: no user-supplied string becomes a path component.
    dest = os.path.join(downloads, hashlib.sha256(source.encode()).hexdigest()[:32] + ".json")
    # Files with no registered checksum get one recorded at download, so a cached copy is always verified.
    record = dest + ".sha256.json"
    with acquire(dest + ".lock", math.inf, dest) as locked:
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
                raise DataError(
                    f"{err.filename} ({source}): permission denied reading the cached download (as uid "
                    f"{os.getuid()}). Make the cache readable by every user (chmod -R a+rX {downloads}), "
                    "or set data.cache_dir to a cache of your own."
                ) from err
            except (ValueError, KeyError) as err:  # DataError is a ValueError
                if not locked:
                    raise DataError(
                        f"{dest} ({source}): {err}; {downloads} is read-only or not writable by this "
                        f"user, so it cannot be downloaded again here. {CACHE_FIX}"
                    ) from err
                logger.warning("%s; downloading again", err)
        if not locked:
            raise DataError(
                f"{source}: no verified copy in {downloads}, which is read-only or not writable by "
                f"this user, so it cannot be downloaded here. {CACHE_FIX}"
            )
        for attempt in range(retries):
            try:
                with files.atomic_file(dest) as tmp:
                    logger.info("downloading %s (attempt %d/%d)", source, attempt + 1, retries)
                    _download(source, tmp)
                    _verify(tmp, source, expected)
                    if expected is None:
                        with files.atomic_file(record) as record_tmp, open(record_tmp, "w") as f:
                            size, digest = files.size_and_sha256(tmp)
                            json.dump({"bytes": size, "sha256": digest}, f)
                return dest
            except (urllib.error.URLError, OSError, TimeoutError) as err:
                if attempt == retries - 1:
                    raise DataError(
                        f"{source}: download failed after {retries} attempts ({err}). Check "
                        "the network, or download it elsewhere and pass the local path."
                    ) from err
                time.sleep(2**attempt)
    raise AssertionError("unreachable")


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the tokenizer's serialized state (vocabulary, normalizer, special tokens), so two
    different tokenizers sharing a name never share features."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    # Truncation and padding are per-call settings that tokenizing leaves behind, not identity.
    state.pop("truncation", None)
    state.pop("padding", None)
    state["class"] = [
        type(tokenizer).__name__,
        tokenizer.all_special_tokens,
        tokenizer.padding_side,
    ]
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def cache_key(
    data_sha256: str,
    tokenizer,
    spec: FeatureSpec,
    do_lower_case: bool,
    split: str,
    max_examples: Optional[int] = None,
) -> str:
    fields = {
        "data": data_sha256,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "split": split,
        "do_lower_case": do_lower_case,
        "format": constants.FEATURE_FORMAT_VERSION,
        "max_examples": max_examples,
        **dataclasses.asdict(spec),
    }
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


def write_entry(tmp: str, arrays: Dict[str, np.ndarray], examples: Examples, meta: dict) -> dict:
    """Writes an entry's arrays, its questions' ids and contexts, and the manifest into `tmp`."""
    described = {}
    for name, arr in arrays.items():
        path = os.path.join(tmp, name + ".npy")
        np.save(path, arr, allow_pickle=False)
        described[name] = {
            "dtype": str(arr.dtype),
            "shape": list(arr.shape),
            "sha256": files.sha256_file(path),
            "bytes": os.path.getsize(path),
        }
    used = sorted(set(examples.context_index))
    remap = {c: i for i, c in enumerate(used)}
    with open(os.path.join(tmp, "examples.json"), "w") as f:
        json.dump(
            {
                "ids": examples.ids,
                "context_index": [remap[c] for c in examples.context_index],
                "contexts": [examples.contexts[c] for c in used],
            },
            f,
        )
    manifest = {
        **meta,
        "files": described,
        "examples_sha256": files.sha256_file(os.path.join(tmp, "examples.json")),
        "num_examples": len(examples),
        "num_features": int(len(arrays["input_ids"])),
        "skipped_examples": examples.skipped,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"numpy": np.__version__, "torch": torch.__version__},
    }
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest  # files.atomic_dir fsyncs the files before it publishes the entry


# Files this process has checksummed, with the size and mtime they had: an entry never changes once
# published, so a second load in the same process hashes only a file that was rewritten since.
_verified: set = set()

# Seconds this process spent waiting on build locks (acquire) and on its node's chief (data.prepare),
# and the chief's own time (CPU + lock waits) in what was waited for: for startup benchmarks.
WAITED = {"lock": 0.0, "barrier": 0.0, "chief_own": 0.0}


def _checksum_ok(path: str, sha256: str) -> bool:
    stat = os.stat(path)
    seen = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, sha256)
    if seen in _verified:
        return True
    if files.sha256_file(path) != sha256:
        return False
    _verified.add(seen)
    return True


def load_entry(entry: str) -> Features:
    """Load and verify an entry; raises DataError when anything is missing or corrupt."""
    try:
        with open(os.path.join(entry, "manifest.json")) as f:
            manifest = json.load(f)
        arrays = {}
        for name, info in manifest["files"].items():
            path = os.path.join(entry, name + ".npy")
            if os.path.getsize(path) != info["bytes"] or not _checksum_ok(path, info["sha256"]):
                raise DataError(f"{path}: size or checksum differs from the manifest")
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if str(arr.dtype) != info["dtype"] or list(arr.shape) != info["shape"]:
                raise DataError(f"{path}: dtype/shape differs from the manifest")
            arrays[name] = arr
        examples_path = os.path.join(entry, "examples.json")
        if not _checksum_ok(examples_path, manifest["examples_sha256"]):
            raise DataError(f"{examples_path}: checksum differs from the manifest")
        with open(examples_path) as f:
            examples = json.load(f)
    except (
        PermissionError
    ) as err:  # another user's entry: not corrupt, so the caller leaves it alone
        raise DataError(
            f"{err.filename}: permission denied reading the cache entry (as uid {os.getuid()}). Make "
            f"the cache readable by every user that trains (chmod -R a+rX {os.path.dirname(entry)}), "
            "or set data.cache_dir to a cache of your own."
        ) from err
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"cache entry {entry} is unreadable or corrupt: {err}") from err
    contexts = examples["contexts"]
    return Features(
        arrays, manifest, examples["ids"], [contexts[c] for c in examples["context_index"]]
    )


def make_cache_dir(path: str) -> None:
    try:
        files.make_dirs(path)  # an existing directory is fine, even read-only
    except OSError as err:
        raise DataError(
            f"{path}: cannot create the cache directory ({err.strerror}). {CACHE_FIX}"
        ) from err


@contextlib.contextmanager
def acquire(lock_path: str, timeout: float, what: str):
    """The build lock, logging while another process holds it; yields True once held, or False when
    the lock file cannot be created or opened because its directory is read-only or another user's:
    the caller may then only read complete entries (published by an atomic rename, never changed).
    filelock uses flock(): the OS releases it when its holder dies, however it dies, so a crashed
    builder never blocks others."""
    # In a directory shared by a group, every member must be able to take the lock later.
    shared = files.group_shared(os.path.dirname(os.path.abspath(lock_path)))
    lock = filelock.FileLock(lock_path, **({"mode": 0o664} if shared else {}))
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
            logger.info(
                "waiting for another process building %s (%.0fs of at most %.0fs)",
                what,
                waited,
                timeout,
            )
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            logger.warning(
                "%s: cannot open the lock file (%s): the cache is read-only here, so only a complete "
                "%s is used, without the lock",
                lock_path,
                err.strerror,
                what,
            )
            break
    WAITED["lock"] += time.time() - started
    try:
        yield locked
    finally:
        if locked:
            lock.release()


def remove_debris(root: str, key: str) -> None:
    """Temporary directories of builders of `key` that died (kill -9, OOM, preemption): call only
    under the key's lock, when nobody else is building it."""
    for name in os.listdir(root):
        if name.startswith(f".partial-{key}."):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
