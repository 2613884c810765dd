"""Artifact I/O shared by all stages: atomic writes (a crash never leaves a file an engine
would take as done), what `--out` may replace (a published directory carries a small marker, and
a command replaces only its own earlier output: `check_out_dir`), output locks (a second writer
waits, bounded, and finds the output written when the holder ran the same command), JSON/CSV,
token arrays and per-rule logging."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import json
import logging
import math
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("vocabscale")


def _umask() -> int:
    """The process's umask. Read from /proc where Linux shows it: os.umask can only read it by
    setting another for a moment, and a file another thread made in that moment would get that
    mode; the fallback sets a strict one meanwhile, so such a file is never more open."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    current = os.umask(0o077)
    os.umask(current)
    return current


def follow_umask(path: str | Path) -> None:
    """Give the file `path` the mode any tool gives a new file, 0666 less the umask: for a
    file made 0600 (mkstemp's, or one that safetensors writes to a temporary of its own and
    renames), which colleagues on a shared cluster could not read."""
    Path(path).chmod(0o666 & ~_umask())


# --- the command this process runs --------------------------------------------------------------

_COMMAND: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "vocabscale_command", default=()
)


@contextlib.contextmanager
def running(argv: list[str]) -> Iterator[None]:
    """Mark the block as running `vocabscale <argv>` (cli.main does): locks name the command,
    and a directory it publishes says it was written by `command_name()`."""
    token = _COMMAND.set(tuple(argv))
    try:
        yield
    finally:
        _COMMAND.reset(token)


def command_name() -> str:
    """`vocabscale <command>` of the running command; `vocabscale` when called as a library."""
    argv = _COMMAND.get()
    return f"vocabscale {argv[0]}" if argv else "vocabscale"


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


def sync_tree(directory: str | Path) -> None:
    """fsync every file and directory under `directory`."""
    for root, _, files in os.walk(directory):
        for name in files:
            fsync(Path(root, name))
        fsync(root)


# --- what --out may replace ---------------------------------------------------------------------

#: The file in every directory a command publishes: the command and the files it wrote, so that
#: a later run recognises its own output. No time, no absolute path: both engines write the same
#: bytes.
OUTPUT_MARKER = ".vocabscale-output.json"
#: What an engine adds to a directory output (Snakemake's time stamp): replaced along with it.
ENGINE_FILES = frozenset({".snakemake_timestamp"})


class OutputNotOurs(ValueError):
    """The output path holds something the command did not write; the message says what."""


def files_under(directory: str | Path) -> list[str]:
    """Every file under `directory` (and every symbolic link, to a directory too), as sorted
    relative paths."""
    found = []
    for root, dirs, files in os.walk(directory):
        base = Path(root).relative_to(directory)
        found += [(base / name).as_posix() for name in files]
        found += [(base / name).as_posix() for name in dirs if Path(root, name).is_symlink()]
    return sorted(found)


def _listing(names: list[str], most: int = 5) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def written_by(directory: str | Path) -> tuple[str, set[str]] | None:
    """(command, files it wrote) from the marker of a published directory; None without one."""
    try:
        marker = json.loads((Path(directory) / OUTPUT_MARKER).read_text())
        return str(marker["written_by"]), set(marker["files"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _not_a_directory(path: Path, command: str) -> OutputNotOurs | None:
    """Why `path` cannot be an output directory at all; None when it can."""
    absolute = Path(os.path.realpath(path))
    if absolute == absolute.parent or Path(os.path.realpath(Path.cwd())).is_relative_to(absolute):
        return OutputNotOurs(
            f"{path} is or holds the working directory: `{command}` replaces its output "
            "directory as a whole, so it leaves this one as it is; give a directory of its own"
        )
    if path.is_symlink() or (os.path.lexists(path) and not path.is_dir()):
        what = "a symbolic link" if path.is_symlink() else "a file"
        return OutputNotOurs(
            f"{path} is {what}, not a directory `{command}` wrote: it is left as it is and "
            "nothing was written; give another path"
        )
    return None


def check_out_dir(path: str | Path, force: bool = False) -> None:
    """Refuse to replace what `path` holds unless this command wrote it: `path` may be absent,
    an empty directory, or an earlier output of the same command (its OUTPUT_MARKER says so)
    holding only the files that command wrote; with `force`, also one where files were added.
    Anything else is left as it is: OutputNotOurs names the path and what it holds. Called
    before any work, and again by `publish_dir`."""
    path, command = Path(path), command_name()
    problem = _not_a_directory(path, command)
    if problem is not None:
        raise problem
    if not path.exists() or not (names := sorted(os.listdir(path))):
        return
    marker = written_by(path)
    if marker is None or marker[0] != command:
        whose = f"the output of `{marker[0]}`" if marker else f"no {OUTPUT_MARKER}: not ours"
        raise OutputNotOurs(
            f"{path} holds {_listing(names)} ({whose}), which `{command}` did not write: it is "
            "left as it is and nothing was written. Give a new or empty directory, or move "
            "this one away first."
        )
    ours = marker[1] | ENGINE_FILES | {OUTPUT_MARKER}
    added = [name for name in files_under(path) if name not in ours]
    if added and not force:
        raise OutputNotOurs(
            f"{path} is an earlier output of `{command}`, but it also holds {_listing(added)}, "
            "which that command did not write: nothing was touched. Move them away, or pass "
            "--force to replace the whole directory."
        )


def _replace(tmp: Path, path: Path) -> None:
    """Rename `tmp` onto `path`; an earlier output there is first renamed aside, under a
    temporary's name (which the next writer clears should this one die), and removed last."""
    aside = None
    if os.path.lexists(path):
        aside = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        os.replace(path, aside)
    os.replace(tmp, path)
    fsync(path.parent)
    if aside is not None:
        shutil.rmtree(aside)


def publish_dir(tmp: Path, path: Path, force: bool = False, leave: Iterable[str] = ()) -> None:
    """Publish the finished directory `tmp` as `path`, if `check_out_dir` allows: mark it as
    this command's output, sync every file, then rename it into place. `leave`: files of `tmp`
    that are no part of the output (a resume record): kept while the rest is synced, removed
    just before the rename."""
    tmp, path, leave = Path(tmp), Path(path), set(leave)
    check_out_dir(path, force)
    files = [name for name in files_under(tmp) if name not in leave | {OUTPUT_MARKER}]
    write_json(tmp / OUTPUT_MARKER, {"written_by": command_name(), "files": files})
    sync_tree(tmp)
    for name in leave:
        (tmp / name).unlink(missing_ok=True)
    fsync(tmp)
    _replace(tmp, path)


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
def atomic_dir(path: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds,
    and only what `check_out_dir` allows (checked before the block and again after it)."""
    path = Path(path)
    check_out_dir(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        publish_dir(tmp, path, force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


# --- one writer per artifact -----------------------------------------------------------------

#: How long a writer waits for another process holding its output's lock, in seconds, unless the
#: environment variable VOCABSCALE_LOCK_WAIT says otherwise (0: not at all).
LOCK_WAIT_SECONDS = 300.0


class OutputLocked(RuntimeError):
    """Another process is writing the same artifact; the message names it."""


class WrittenMeanwhile(Exception):
    """Another process running this very command wrote the output while this one waited for its
    lock: nothing is left to do (`vocabscale` exits with status 0)."""


def lock_wait_seconds() -> float:
    """VOCABSCALE_LOCK_WAIT, or LOCK_WAIT_SECONDS."""
    text = os.environ.get("VOCABSCALE_LOCK_WAIT")
    if text is None:
        return LOCK_WAIT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < math.inf:
        raise ValueError(f"VOCABSCALE_LOCK_WAIT={text!r}: not a number of seconds (0 or more)")
    return seconds


def _holder() -> dict[str, Any]:
    """Who takes a lock: enough for a user to find the process, on any node, and for a writer
    waiting for it to tell whether it runs the same command."""
    argv = list(_COMMAND.get())
    command = ["vocabscale", *argv] if argv else [Path(sys.argv[0]).name, *sys.argv[1:]]
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(command),
        "argv": argv or None,
        "cwd": os.getcwd(),
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


def _identity(path: Path) -> tuple[int, ...] | None:
    """What changes when `path` is written anew (atomic writes rename a new inode onto it)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns


@dataclass
class _Wait:
    """A writer waiting for the holder of its output's lock."""

    path: Path
    holder: str
    before: tuple[int, ...] | None  # the output when the wait began
    deadline: float
    delay: float = 0.05

    @classmethod
    def begin(cls, path: Path, holder: str) -> _Wait:
        seconds = lock_wait_seconds()
        if seconds == 0:
            raise OutputLocked(_locked_message(path, holder, 0))
        log.warning(
            "%s is being written by another process (%s): waiting up to %g s for it to finish "
            "(VOCABSCALE_LOCK_WAIT)",
            path,
            describe_holder(holder),
            seconds,
        )
        return cls(path, holder, _identity(path), time.monotonic() + seconds)

    def again(self, holder: str) -> None:
        """The lock is still held (by `holder`): sleep a little, or give up at the deadline."""
        self.holder = holder
        if time.monotonic() >= self.deadline:
            raise OutputLocked(_locked_message(self.path, holder, lock_wait_seconds()))
        time.sleep(min(self.delay, max(self.deadline - time.monotonic(), 0)))
        self.delay = min(self.delay * 2, 2.0)

    def written_meanwhile(self) -> bool:
        """Whether the last holder ran this same command (the same arguments, in the same
        directory) and the output appeared or was replaced while we waited."""
        try:
            holder = json.loads(self.holder)
        except ValueError:
            return False
        if not isinstance(holder, dict):
            return False
        mine = list(_COMMAND.get())
        same = bool(mine) and holder.get("argv") == mine and holder.get("cwd") == os.getcwd()
        now = _identity(self.path)
        return same and now is not None and now != self.before


def _locked_message(path: Path, holder: str, waited: float) -> str:
    waiting = f" This one waited {waited:g} s for it (VOCABSCALE_LOCK_WAIT)." if waited else ""
    return (
        f"{path} is being written by another process ({describe_holder(holder)}).{waiting} "
        "Nothing was touched; wait for it to finish, or stop it, then run this again."
    )


def _release(fd: int, lock: Path) -> None:
    lock.unlink(missing_ok=True)  # while still holding it: see _acquire
    os.close(fd)


def _acquire(lock: Path, path: Path) -> int | None:
    """An open descriptor of `lock` that holds it (None where the filesystem cannot lock).
    While another process holds it, wait for that one (`_Wait`): OutputLocked when the wait
    runs out, WrittenMeanwhile when it ran this same command and wrote the output."""
    wait: _Wait | None = None
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            if wait is None:
                wait = _Wait.begin(path, holder)
            else:
                wait.again(holder)
            continue
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
        if not same:  # a file its last holder removed between our open and our lock
            os.close(fd)
            continue
        if wait is not None and wait.written_meanwhile():
            _release(fd, lock)
            raise WrittenMeanwhile(
                f"{path} was written by {describe_holder(wait.holder)}, the same command, "
                "while this one waited for it: nothing left to do"
            )
        return fd


def remove_stale_temporaries(path: Path) -> None:
    """Remove what killed writers of `path` left (`atomic_path`/`atomic_dir` temporaries, an
    earlier output renamed aside); only safe under the output's lock."""
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
    writes it. A second writer (the other engine, an orphaned SLURM job) waits for the holder
    (`lock_wait_seconds`), touching nothing: if the holder ran the same command and wrote the
    output meanwhile, it raises WrittenMeanwhile (nothing left to do; failing instead would
    let Snakemake delete that output as the failed job's); if the holder ended without writing
    it, it takes over; if the wait runs out, it raises OutputLocked naming the holder. The lock
    is the kernel's (flock; on NFS, the server's), so a process that dies, however it dies,
    releases it at once: the next writer takes it over and clears the temporaries the dead one
    left."""
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
        _release(fd, lock)


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
