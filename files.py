"""Files published whole and checked by content: the one sha256 of a file and the one atomic
publish (a temporary sibling, fsynced, renamed into place) that every writer of the project uses:
downloads, the feature cache, model directories, predictions, metrics and pictures, S3 transfers.

Temporary siblings are named `.partial-<name>.<pid>.tmp`, so leftovers of a killed writer are
recognisable (the feature cache removes its own under its lock). Standard library only: the
commands that import it (squad_eval.py) stay quick to start.
"""

import contextlib
import hashlib
import os
import shutil
import uuid
from typing import Iterator, Tuple

MiB = 1 << 20


def size_and_sha256(path: str, chunk: int = MiB) -> Tuple[int, str]:
    """(bytes, hex sha256) of a file, from one read: both describe the same content."""
    digest, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
            n += len(block)
    return n, digest.hexdigest()


def sha256_file(path: str) -> str:
    return size_and_sha256(path)[1]


def temp_sibling(path: str) -> str:
    """The temporary name beside `path` that its atomic publish writes first."""
    path = os.path.abspath(path)
    return os.path.join(
        os.path.dirname(path), f".partial-{os.path.basename(path)}.{os.getpid()}.tmp"
    )


def _fsync(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_file(path: str, mode: int = 0o644) -> Iterator[str]:
    """Yields a new, empty temporary file beside `path` (created exclusively: a name in use is an
    error, not overwritten); when the block completes it is fsynced and renamed onto `path`, so
    readers see the old file or the whole new one. On any error it is removed and `path` is left
    as it was."""
    tmp = temp_sibling(path)
    with open(tmp, "xb"):
        pass
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, mode)  # readable by every user of a shared directory
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """Yields a new temporary directory beside `path`; when the block completes its files are
    fsynced and it replaces `path` (an existing directory is moved aside first, and back if the
    rename fails), so a half-written directory is never mistaken for a finished one. On any error
    it is removed and `path` is left as it was."""
    tmp = temp_sibling(path)
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
    os.mkdir(tmp)
    try:
        yield tmp
        for root, _, names in os.walk(tmp):
            for name in names:
                _fsync(os.path.join(root, name))
        os.chmod(tmp, 0o755)
        _replace_dir(tmp, os.path.abspath(path))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # still there only if something failed


def _replace_dir(new: str, dest: str) -> None:
    if not os.path.isdir(dest):
        os.replace(new, dest)
        return
    # A directory cannot be renamed over a non-empty one: move the old one aside first.
    aside = os.path.join(
        os.path.dirname(dest), f".replaced-{os.path.basename(dest)}-{uuid.uuid4().hex[:8]}"
    )
    os.replace(dest, aside)
    try:
        os.replace(new, dest)
    except OSError:
        os.replace(aside, dest)
        raise
    shutil.rmtree(aside, ignore_errors=True)
