"""Atomic writes: everything is written in a temporary place, then moved into place.

One mechanism for every file or folder tfdeblur publishes. A writer works in
a hidden *work folder* next to the destination (same file system, so the
final move is one ``rename``), named after the destination and the writing
process and holding a marker (process id, host, process start time):

    with work_folder(path) as work:
        new = os.path.join(work, "model.tflite")
        ...write and verify new...
        publish(new, path, overwrite=True)

Any failure inside the ``with`` removes the work folder and leaves ``path``
as it was. A writer that is killed leaves its work folder behind; the next
:func:`work_folder` in the same parent folder removes it once the process
that made it no longer runs (and puts back an old destination it had set
aside while replacing it).

:func:`write_file` is the one writer of single files, local or on any
TensorFlow filesystem (``tf.io.gfile``): a hidden temporary file next to the
destination, flushed and renamed over it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator

__all__ = ["MARKER", "SET_ASIDE", "is_url", "publish", "remove", "remove_stale_work_folders",
           "temporary_name", "work_folder", "write_file"]

log = logging.getLogger(__name__)

_WORK_TAG = ".tfdeblur-tmp-"
_WORK_NAME = re.compile(r"\..*\.tfdeblur-tmp-(\d+)-[a-z0-9_]{8}")
#: The marker file in each work folder (JSON: pid, host, start, destination).
MARKER = "tfdeblur-export.json"
#: Name, inside the work folder, of an old destination set aside while it is replaced.
SET_ASIDE = "old"
# A work folder without its marker (its process was killed within microseconds
# of creating it) is judged by the process id in its name once it is older
# than this, so that a folder just being made is never taken for a stale one.
_UNMARKED_GRACE_S = 60.0


def _process_state(pid: int) -> tuple[str, str] | None:
    """``(state, start time in clock ticks)`` of a Linux process, None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _process_alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` (started at ``start``, if known) may still run; True if unsure."""
    if os.name == "nt":
        return True  # os.kill(pid, 0) would terminate it there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    except (OverflowError, ValueError):
        return False
    state = _process_state(pid)
    if state is not None:
        if state[0] in ("Z", "X"):  # killed, not yet reaped
            return False
        if start is not None and state[1] != start:  # the id was reused
            return False
    return True


@contextlib.contextmanager
def work_folder(path: str | os.PathLike) -> Iterator[str]:
    """A hidden folder next to ``path`` for everything written before publishing it.

    Removes the stale work folders of dead processes in the same parent
    folder first. The folder (and whatever is left in it) is removed on exit.

    Args:
        path: the destination (file or folder) the work is for; its parent
            folder must exist.

    Yields:
        The absolute path of the work folder.
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    remove_stale_work_folders(parent)
    pid = os.getpid()
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(path)[:80]}{_WORK_TAG}{pid}-",
                            dir=parent)
    try:
        state = _process_state(pid)
        marker = {"pid": pid, "host": socket.gethostname(),
                  "start": state[1] if state else None, "destination": os.path.basename(path)}
        with open(os.path.join(work, MARKER + ".tmp"), "w") as f:
            json.dump(marker, f)
        os.replace(os.path.join(work, MARKER + ".tmp"), os.path.join(work, MARKER))
        yield work
    finally:
        remove(work)


def remove_stale_work_folders(parent: str | os.PathLike) -> None:
    """Removes the work folders in ``parent`` left by processes that no longer run."""
    parent = os.fspath(parent)
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        match = _WORK_NAME.fullmatch(name)
        work = os.path.join(parent, name)
        if match is None or os.path.islink(work) or not os.path.isdir(work):
            continue
        pid = int(match.group(1))
        marker = _read_marker(work)
        if marker is None:
            try:
                age = time.time() - os.lstat(work).st_mtime
            except OSError:
                continue
            if age < _UNMARKED_GRACE_S or os.path.lexists(os.path.join(work, MARKER)):
                continue  # being made, or a marker that is not ours
            marker = {"pid": pid, "host": socket.gethostname(), "start": None,
                      "destination": None}
        if (pid <= 0 or marker.get("pid") != pid or marker.get("host") != socket.gethostname()
                or _process_alive(pid, marker.get("start"))):
            continue
        _restore_set_aside(work, parent, marker.get("destination"))
        remove(work)
        log.info("removed %s, left by process %d, which no longer runs", work, pid)


def _read_marker(work: str) -> dict | None:
    try:
        with open(os.path.join(work, MARKER)) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _restore_set_aside(work: str, parent: str, destination) -> None:
    # Killed between setting the old destination aside and renaming the new
    # one in: the old one goes back to its place.
    old = os.path.join(work, SET_ASIDE)
    if not isinstance(destination, str) or os.sep in destination or destination in ("", ".", ".."):
        return
    path = os.path.join(parent, destination)
    if os.path.lexists(old) and not os.path.lexists(path):
        try:
            os.rename(old, path)
            log.warning("restored %s, set aside by a process that was killed", path)
        except OSError:
            pass


def publish(new: str, path: str, *, overwrite: bool,
            recheck: Callable[[], object] | None = None, what: str = "") -> None:
    """Moves the finished ``new`` (inside a :func:`work_folder` of ``path``) to ``path``.

    A file is renamed over ``path`` in one step (with ``overwrite``) or
    hard-linked to it, which fails if ``path`` appeared meanwhile. A folder
    is renamed to a missing ``path`` in one step; an existing one is set
    aside in the work folder, the new one renamed in, the old one deleted
    (put back on failure, or by the next writer when this process is killed
    in between).

    Args:
        new: the finished file or folder, in the work folder of ``path``.
        path: the destination (absolute).
        overwrite: whether an existing ``path`` may be replaced.
        recheck: called (its result ignored) before an existing ``path`` is
            replaced; it raises when the destination may no longer be
            replaced (it may have changed while the work was done).
        what: what ``path`` is, for the error message (e.g. "TFLite file").

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    work = os.path.dirname(new)
    if os.path.isdir(new):
        if not os.path.lexists(path):
            try:
                # Fails for a non-empty folder that appeared meanwhile: a
                # concurrent writer is never merged into.
                os.rename(new, path)
                return
            except OSError:
                if not os.path.lexists(path):
                    raise
        if not overwrite:
            raise _exists(path, what)
        if recheck is not None:
            recheck()
        old = os.path.join(work, SET_ASIDE)
        os.rename(path, old)
        try:
            os.rename(new, path)
        except BaseException:
            os.rename(old, path)
            raise
        remove(old)
    elif overwrite:
        if os.path.lexists(path) and recheck is not None:
            recheck()
        os.replace(new, path)
    else:
        try:
            os.link(new, path)  # fails if path exists, unlike rename
        except FileExistsError as e:
            raise _exists(path, what) from e
        except OSError:  # no hard links on this file system
            if os.path.lexists(path):
                raise _exists(path, what) from None
            os.rename(new, path)
            return
        os.unlink(new)


def _exists(path: str, what: str) -> FileExistsError:
    return FileExistsError(f"{what} {path}".strip() + " already exists (pass overwrite=True "
                           "to replace it)")


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URL of a TensorFlow filesystem (``gs://``, ``ram://``, ...)."""
    return "://" in os.fspath(path)


def temporary_name(path: str) -> str:
    """The hidden temporary name ``path`` is written under before the rename:
    ``.{name}.{pid}.{random}.tmp`` in the same folder (readers skip hidden files)."""
    folder, name = os.path.split(path) if not is_url(path) else path.rsplit("/", 1)
    tmp = f".{name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    return os.path.join(folder, tmp) if not is_url(path) else f"{folder}/{tmp}"


def write_file(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> str:
    """Writes ``data`` to ``path`` atomically: readers see the old file or the new one.

    The one writer of single files (images, caches, CSV and JSON files,
    checkpoints, models). The bytes go to :func:`temporary_name` in the same
    folder, are flushed to disk and renamed over ``path`` (hard-linked to it
    without ``overwrite``, which fails if ``path`` appeared meanwhile); the
    folder is synced so that the rename survives a crash. A URL of a
    TensorFlow filesystem (``gs://``, ``ram://``, ``hdfs://``) goes through
    ``tf.io.gfile`` the same way (the rename is atomic where the filesystem
    makes it so). On any failure the temporary file is removed and ``path``
    is left as it was.

    Returns:
        ``path`` (absolute for a local path).

    Raises:
        OSError: naming ``path`` when its folder is missing or the write fails
            (FileNotFoundError for a missing folder, FileExistsError when
            ``path`` exists and ``overwrite`` is False).
    """
    path = os.fspath(path)
    if is_url(path):
        return _write_gfile(path, data, overwrite)
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    tmp = temporary_name(path)
    # os.open with mode 0o666 (not mkstemp's 0o600) so the result honours the umask.
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            publish(tmp, path, overwrite=False, what="file")
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, FileExistsError):
            raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
        raise
    _sync_folder(folder)
    return path


def _sync_folder(folder: str) -> None:
    # A rename is only durable once the folder entry is on disk.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_gfile(path: str, data: bytes, overwrite: bool) -> str:
    import tensorflow as tf

    tmp = temporary_name(path)
    try:
        with tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(data)
        tf.io.gfile.rename(tmp, path, overwrite=overwrite)
    except BaseException as e:
        with contextlib.suppress(Exception):
            tf.io.gfile.remove(tmp)
        if isinstance(e, tf.errors.AlreadyExistsError):
            raise _exists(path, "file") from None
        raise
    return path


def remove(path: str) -> None:
    """Removes a file, link or folder tree; nothing when it does not exist."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)
