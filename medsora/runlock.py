"""One writer per folder: an advisory `flock` on FOLDER/.lock, held for the life of the process.

    with folder_lock(run_dir, "train"):   # a second `medsora train` into run_dir is refused, naming the holder
        ...

The kernel drops the lock when its process ends, killed or not, so a crash never leaves a stale lock behind;
the file only records who holds it (command, pid, host, start time) for the message the next one gets, and is
emptied on release.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from .errors import MedsoraError

LOCK = ".lock"


class LockedError(MedsoraError, RuntimeError):
    pass


@contextlib.contextmanager
def folder_lock(folder: str | Path, command: str):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(f"{folder} is in use by {_holder(path)}; wait for it to finish or stop it, or use "
                              "another folder. Nothing was changed.") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)   # no holder any more
    finally:
        os.close(fd)   # releases the lock


def _holder(path: Path) -> str:
    try:
        h = json.loads(path.read_text())
        return f"`medsora {h['command']}` (pid {h['pid']} on {h['host']}, since {h['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
