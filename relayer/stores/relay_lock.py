"""The relay lock: one process at a time relays through a journal (`lock_for_relaying`).

A relaying process (`relayer serve`, `mcp` or `keeper` with signers, i.e. a `SqliteJournal(...,
relaying=True)` in `relayer.stores.journal`) holds an exclusive `flock` on `<journal>.lock` for as long as it
relays; readers take nothing. Within one process the lock is shared and counted (`RelayLock`). The journal's
records and writer live in `relayer.stores.journal`, the chains its records belong to in
`relayer.stores.journal_chains`.
"""

from __future__ import annotations

import fcntl
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from relayer.errors import ConfigurationError
from relayer.stores import sqlite as store_file

RELAY_LOCK_SUFFIX = ".lock"
"""`<journal>.lock`, beside the journal: the file a relaying process holds an exclusive `flock` on."""


def lock_for_relaying(journal_path: Path | str) -> RelayLock:
    """Take the lock that lets this process relay through the journal at `journal_path`.

    Two processes relaying through one journal would each number the same signers' nonces from it (each
    behind its own per-signer lock), resend each other's records, and an embedded start would drop records
    another process is still working on. So a relaying process (`relayer serve`, `mcp` or `keeper` with
    signers: a `SqliteJournal(..., relaying=True)`) holds an exclusive `flock` on `<journal>.lock` (created
    0600 beside the journal, holding the holder's process id) for as long as it relays. Readers (`relayer
    keys`, `relay list` and `status`) take nothing: WAL lets them read beside the relayer. The OS drops the
    lock when its process ends, however it ends, so a crash leaves nothing to clean up.

    Within one process the lock is shared and counted: `flock` would refuse the process's own second open of
    the file, and one process may hold it several times over (`relayer serve` from its start-up checks
    through its app's lifespan; a relay restarted in process). The lock file is released when the last
    holder lets go.

    Raises:
        ConfigurationError: another process holds the lock (naming the journal and that process), or the
            lock file cannot be created.
    """
    if str(journal_path) == ":memory:":
        return RelayLock(None)
    path = os.path.abspath(journal_path)  # messages name the file wherever the command was started
    lock_path = Path(path + RELAY_LOCK_SUFFIX)
    try:
        store_file.create_private_folder(lock_path.parent)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, store_file.PRIVATE_FILE_MODE)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the relay journal's lock file {lock_path}: {exc}", journal=path
        ) from None
    with _HELD_GUARD:
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino)
        held = _HELD_LOCKS.get(key)
        if held is not None:
            os.close(fd)  # flock belongs to the held descriptor: closing this other one leaves it in place
            held.holders += 1
            return RelayLock(key)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"another process (pid {holder})" if holder.isdigit() else "another process"
            raise ConfigurationError(
                f"{who} is relaying through the journal {path} (it holds {lock_path}): two relayers on one"
                " journal would number the same signers' nonces and resend each other's records. Stop it,"
                " or give this one its own journal (--journal PATH or RELAYER_RELAY_JOURNAL_PATH)",
                journal=path,
                lockFile=str(lock_path),
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        _HELD_LOCKS[key] = _HeldLock(fd, 1)
        return RelayLock(key)


class RelayLock:
    """One holder's share of this process's relay lock on a journal (`lock_for_relaying`).

    `release()` (or leaving a `with` block) gives the share back, once; the last share closes the lock file,
    which ends the `flock`.
    """

    def __init__(self, key: tuple[int, int] | None) -> None:
        self._key = key
        self._released = False

    def release(self) -> None:
        with _HELD_GUARD:
            if self._released:
                return
            self._released = True
            if self._key is None:
                return
            held = _HELD_LOCKS[self._key]
            held.holders -= 1
            if held.holders == 0:
                del _HELD_LOCKS[self._key]
                os.close(held.fd)

    def __enter__(self) -> RelayLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


@dataclass
class _HeldLock:
    fd: int
    holders: int


_HELD_LOCKS: dict[tuple[int, int], _HeldLock] = {}
"""This process's relay locks, by the lock file's (device, inode), with how many holders share each."""

_HELD_GUARD = threading.Lock()
