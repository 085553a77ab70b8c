"""One writer per stage folder: an exclusive lock held while a stage writes its folder.

The lock is an ``flock`` on a file beside the folder (``.NAME.lock``, so clearing the folder
keeps it), holding who took it (pid, host, since). The kernel releases it when its holder
exits, however it exits, so a lock whose holder is gone is simply taken over, with a note.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from cfcl.errors import StoreError


class FolderBusyError(StoreError):
    """Another live process is writing the folder."""


_held: set[Path] = set()


def lock_path(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    return folder.with_name(f".{folder.name}.lock")


def _holder_text(info: dict) -> str:
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace")
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {}


def _open_locked(path: Path) -> int:
    """A descriptor of ``path`` holding its flock; the file may have been replaced meanwhile, so the
    lock counts only if ``path`` still is the file that was locked."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderBusyError(
                f"{path.with_name(path.name[1:-5])} is being written by another process ({_holder_text(holder)}); "
                "wait for it to finish or stop it"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the write lock of ``folder`` for the block; a second writer stops at once with a
    one-line :class:`FolderBusyError` naming the folder and the holder. Re-entrant: a block inside
    another holding the same lock (the pipeline clearing a folder, then the stage writing it) keeps it."""
    path = lock_path(folder).absolute()
    if path in _held:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_locked(path)
    _held.add(path)
    try:
        left = _read_holder(fd)
        if left:
            print(
                f"note: taking over the lock of {Path(folder)}, left by {_holder_text(left)} (holder gone)", flush=True
            )
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield
    finally:
        _held.discard(path)
        path.unlink(missing_ok=True)
        os.close(fd)
