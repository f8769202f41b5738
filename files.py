"""Files published whole and checked by content: the one sha256 of a file and the one atomic
publish (a temporary sibling, fsynced, renamed into place) that every writer of the project uses:
downloads, the feature cache, model directories, predictions, metrics and pictures, S3 transfers.

Temporary siblings are named `.partial-<name>.<host>-<pid>.tmp`, so leftovers of a killed writer
are recognisable: every publish first removes those of its target left by processes of this host
that are gone (a process of another host sharing the filesystem is never judged; the feature
cache also removes every one of its key under its lock). In a directory shared by a group (setgid
and group-writable) everything written is made group-writable whatever the umask, never
world-writable. A full filesystem ends as errors.DiskFull, with the temporary files removed.
Standard library only: the commands that import it (squad_eval.py) stay quick to start.
"""

import contextlib
import errno
import hashlib
import os
import shutil
import socket
import stat
from typing import Iterator, Optional, Tuple

from errors import DiskFull

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


def _tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def temp_sibling(path: str, kind: str = "partial") -> str:
    """The temporary name beside `path` that its atomic publish writes first."""
    path = os.path.abspath(path)
    return os.path.join(os.path.dirname(path), f".{kind}-{os.path.basename(path)}.{_tag()}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_debris(path: str) -> None:
    """Removes the temporary siblings of `path` left by writers of this host that no longer run
    (SIGKILL, OOM, preemption). A live process, or one of another host, may still be writing
    its own: those are left alone."""
    path = os.path.abspath(path)
    folder, base = os.path.split(path)
    host = socket.gethostname()
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        for kind in ("partial", "replaced"):
            prefix = f".{kind}-{base}.{host}-"
            pid = name[len(prefix) : -len(".tmp")]
            if name.startswith(prefix) and name.endswith(".tmp") and pid.isdigit():
                if not _alive(int(pid)):
                    full = os.path.join(folder, name)
                    if kind == "replaced" and not os.path.lexists(path):
                        # Killed between its two renames: the old copy is the only complete one.
                        with contextlib.suppress(OSError):
                            os.replace(full, path)
                    elif os.path.isdir(full) and not os.path.islink(full):
                        shutil.rmtree(full, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(full)


def group_shared(folder: str) -> bool:
    """A directory administrators share with a group: setgid and group-writable."""
    try:
        mode = os.stat(folder).st_mode
    except OSError:
        return False
    return bool(mode & stat.S_ISGID and mode & stat.S_IWGRP)


def share(path: str, mode: Optional[int] = None, shared: Optional[bool] = None) -> None:
    """Sets `path`'s mode (default: kept), adding group read/write (and setgid on directories)
    when its directory is shared by a group (or `shared`), as git's core.sharedRepository=group
    does; never world-writable."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return
    new = stat.S_IMODE(st.st_mode) if mode is None else mode
    if shared is None:
        shared = group_shared(os.path.dirname(os.path.abspath(path)))
    if shared:
        new |= stat.S_IRGRP | stat.S_IWGRP
        if stat.S_ISDIR(st.st_mode):
            new |= stat.S_IXGRP | stat.S_ISGID
    new &= ~stat.S_IWOTH
    if new != stat.S_IMODE(st.st_mode):
        os.chmod(path, new)


def make_dirs(path: str) -> None:
    """os.makedirs(exist_ok=True), each new directory shared as its parent is (see `share`)."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return
    make_dirs(os.path.dirname(path))
    try:
        os.mkdir(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    share(path)


def disk_full(err: BaseException, path: str) -> Optional[DiskFull]:
    """The one place that tells a full filesystem (or quota) from other write errors: the error to
    raise instead, or None. NumPy's short writes carry no errno; a filesystem with no space left
    at that moment is taken as the cause."""
    if not isinstance(err, OSError):
        # Rust writers (safetensors) report the OS error in their message only.
        codes = (errno.ENOSPC, errno.EDQUOT)
        return DiskFull(path, err) if any(f"(os error {c})" in str(err) for c in codes) else None
    if err.errno not in (errno.ENOSPC, errno.EDQUOT):
        if err.errno is not None:
            return None
        try:
            st = os.statvfs(os.path.dirname(os.path.abspath(path)))
        except OSError:
            return None
        if st.f_bavail * st.f_frsize >= MiB:
            return None
    return DiskFull(path, err)


def _fsync(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_file(path: str, mode: int = 0o644) -> Iterator[str]:
    """Yields a new, empty temporary file beside `path` (created exclusively: a name in use is an
    error, not overwritten); when the block completes it is fsynced and renamed onto `path`, so
    readers see the old file or the whole new one. On any error it is removed and `path` is left
    as it was; a full filesystem raises DiskFull."""
    sweep_debris(path)
    tmp = temp_sibling(path)
    try:
        with open(tmp, "xb"):
            pass
        yield tmp
        _fsync(tmp)
        share(tmp, mode)  # readable by every user of a shared directory
        os.replace(tmp, path)
    except Exception as err:  # noqa: BLE001 (re-raised unless the filesystem is full)
        full = disk_full(err, tmp)
        if full is None:
            raise
        raise full from err
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """Yields a new temporary directory beside `path`; when the block completes its files are
    fsynced and it replaces `path` (an existing directory is moved aside first, and back if the
    rename fails), so a half-written directory is never mistaken for a finished one. On any error
    it is removed and `path` is left as it was; a full filesystem raises DiskFull."""
    sweep_debris(path)
    tmp = temp_sibling(path)
    try:
        make_dirs(os.path.dirname(tmp))
        os.mkdir(tmp)
        # Decided by the target's directory: a group's next writer must be able to sweep it.
        shared = group_shared(os.path.dirname(tmp))
        share(tmp, shared=shared)
        yield tmp
        for root, dirs, names in os.walk(tmp):
            for name in names:
                _fsync(os.path.join(root, name))
                share(os.path.join(root, name), shared=shared)
            for name in dirs:
                share(os.path.join(root, name), shared=shared)
        share(tmp, 0o755, shared)
        _replace_dir(tmp, os.path.abspath(path))
    except Exception as err:  # noqa: BLE001 (re-raised unless the filesystem is full)
        full = disk_full(err, tmp)
        if full is None:
            raise
        raise full from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # still there only if something failed


def _replace_dir(new: str, dest: str) -> None:
    if not os.path.isdir(dest):
        os.replace(new, dest)
        return
    # A directory cannot be renamed over a non-empty one: move the old one aside first.
    aside = temp_sibling(dest, "replaced")
    os.replace(dest, aside)
    try:
        os.replace(new, dest)
    except OSError:
        os.replace(aside, dest)
        raise
    shutil.rmtree(aside, ignore_errors=True)
