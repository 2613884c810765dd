"""Artifact I/O shared by all stages: atomic writes, output locks, JSON/CSV, token arrays and
per-rule logs, so that a crash never leaves a file an engine would take as done and two
writers of one artifact never meet."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("vocabscale")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def follow_umask(path: str | Path) -> None:
    """Give the file `path` the mode any tool gives a new file, 0666 less the umask: for a
    file made 0600 (mkstemp's, or one that safetensors writes to a temporary of its own and
    renames), which colleagues on a shared cluster could not read."""
    Path(path).chmod(0o666 & ~_umask())


def fsync(path: str | Path) -> None:
    """Flush a file's or a directory's data to disk. Before a rename, so that a node that
    crashes right after it leaves the complete file under the final name, never an empty one
    (network filesystems and ext4 may otherwise commit the rename first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:
        # some filesystems cannot sync a directory; the files in it are synced all the same
        if not (os.path.isdir(path) and error.errno in (errno.EINVAL, errno.ENOTSUP)):
            raise
    finally:
        os.close(fd)


def publish_dir(tmp: Path, path: Path) -> None:
    """Sync every file of the finished directory `tmp`, then rename it onto `path`."""
    for directory, _, files in os.walk(tmp):
        for name in files:
            fsync(Path(directory, name))
        fsync(directory)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    fsync(path.parent)


def _temporary_name(name: str) -> re.Pattern:
    """The names of the temporaries `atomic_path` and `atomic_dir` make for `<name>`:
    `.<name>.<8 characters of mkstemp>.tmp`."""
    return re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}\.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    follow_umask(tmp_path)  # mkstemp makes 0600; artifacts are ordinary files
    try:
        yield tmp_path
        fsync(tmp_path)
        os.replace(tmp_path, path)
        fsync(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        publish_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


# --- one writer per artifact -----------------------------------------------------------------


class OutputLocked(RuntimeError):
    """Another process is writing the same artifact; the message names it."""


def _holder() -> dict[str, Any]:
    """Who takes a lock: enough for a user to find the process, on any node."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def describe_holder(text: str) -> str:
    """A lock file's content in words: pid, host, SLURM job, since when, the command."""
    try:
        holder = json.loads(text)
        words = f"pid {holder['pid']} on host {holder['host']}"
    except (ValueError, TypeError, KeyError):
        return "a process that has not yet written its name"
    if holder.get("slurm_job_id"):
        words += f", SLURM job {holder['slurm_job_id']}"
    return f"{words}, since {holder.get('since')}: `{holder.get('command')}`"


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 1 << 16).decode("utf-8", "replace")


def _acquire(lock: Path, path: Path) -> int | None:
    """An open descriptor of `lock` that holds it (None where the filesystem cannot lock)."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(_read(fd))
            os.close(fd)
            raise OutputLocked(
                f"{path} is being written by another process ({holder}). Nothing was touched; "
                "wait for it to finish, or stop it, then run this again."
            ) from None
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.ENOLCK, errno.ENOTSUP, errno.ENOSYS):
                log.warning(
                    "%s: this filesystem cannot lock files (%s); nothing keeps a second "
                    "writer of %s away",
                    lock,
                    error.strerror,
                    path,
                )
                return None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its last holder removed between our open and our lock
            return fd
        os.close(fd)


def remove_stale_temporaries(path: Path) -> None:
    """Remove what killed writers of `path` left (`atomic_path`/`atomic_dir` temporaries);
    only safe under the output's lock."""
    pattern = _temporary_name(path.name)
    for stale in path.parent.iterdir():
        if pattern.fullmatch(stale.name):
            log.info("removing %s, left by a writer that was killed", stale)
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


@contextlib.contextmanager
def output_lock(path: str | Path) -> Iterator[None]:
    """Hold the lock of the artifact `path` (the file `.<name>.lock` beside it) while the block
    writes it: a second writer (the other engine, an orphaned SLURM job) raises OutputLocked
    naming the holder, before touching anything. The lock is the kernel's (flock; on NFS,
    the server's), so a process that dies, however it dies, releases it at once: the next
    writer takes it over and clears the temporaries the dead one left."""
    path = Path(path)
    lock = path.parent / f".{path.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, path)
    if fd is None:
        yield
        return
    try:
        previous = _read(fd)
        if previous.strip():
            log.warning(
                "taking over the lock of %s from %s, which ended without releasing it (killed?)",
                path,
                describe_holder(previous),
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(_holder()).encode())
        remove_stale_temporaries(path)
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still holding it: see _acquire
        os.close(fd)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def to_json(data: Any) -> str:
    plain = json.loads(json.dumps(data, default=_json_default))
    return json.dumps(_finite(plain), indent=2, sort_keys=False, allow_nan=False) + "\n"


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(to_json(data))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no such file (did the stage that makes it run?)"
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g", lineterminator="\n")


#: The token arrays of a tokenize output directory, `<split>.bin`.
TOKEN_SPLITS = ("train", "validation")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 holds ids below 65536; larger vocabularies need uint32."""
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def read_tokens(path: str | Path, vocab_size: int) -> np.memmap:
    """Memory-map a flat token array written by the tokenize stage."""
    return np.memmap(path, dtype=token_dtype(vocab_size), mode="r")


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when the engine gives one, to the rule's log file."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)
