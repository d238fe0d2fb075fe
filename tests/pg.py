"""A throwaway PostgreSQL cluster of the test run's own, so the stores' tests run on a real server.

The server binaries come from Debian's `postgresql` package (scripts/setup.sh installs it), but not its
cluster: each pytest process (each xdist worker) runs `initdb` into a temporary directory, starts the server
on a free loopback port with a socket directory of its own, and removes everything when it stops. Nothing
depends on the machine's `15 main` cluster running, and two runs never share a server.

`initdb` and `postgres` refuse to run as root, so as root they run as the `postgres` user the package made,
through `runuser`; the temporary directory is then owned by that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

DEBIAN_SERVERS = Path("/usr/lib/postgresql")
"""Debian installs each major version's server binaries in <this>/<major>/bin."""
SERVER_USER = "postgres"
"""Who runs the server when we are root (the Debian package creates this user)."""
SUPERUSER = "postgres"
"""The cluster's superuser role (initdb -U), the one every URL names; `trust` auth, so no password."""
FAST_SETTINGS: Mapping[str, str] = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
"""No waiting for the disk: a crash would lose the cluster, which a throwaway cluster never minds."""
TMPFS = Path("/dev/shm")
"""Where a fast cluster lives when there is room: in memory. CREATE DATABASE writes ~8 MB; on a slow virtual
disk that took 200-300 ms instead of 25 ms, per test."""
TMPFS_MIN_FREE_BYTES = 1 << 30
"""Room /dev/shm must have for a cluster (~40 MB, plus the tests' databases and the server's shared memory);
Docker's default 64 MB /dev/shm has not, so such a machine gets the temporary directory instead."""
START_TIMEOUT_S = 30
"""How long the server may take to accept connections (a busy 2-core CI box takes about a second)."""
START_ATTEMPTS = 3
"""A free port can be taken by someone else between picking and binding it: retry on a new port."""


class PostgresUnavailableError(RuntimeError):
    """The machine cannot run a cluster: no server binaries, or (as root) no user or `runuser` to run them."""


def find_bindir() -> Path | None:
    """The newest installed server's bin directory, or None.

    The highest `/usr/lib/postgresql/<major>/bin` holding `initdb` (Debian); otherwise the directory of an
    `initdb` on PATH (other systems put the server binaries there).
    """
    candidates = DEBIAN_SERVERS.glob("*/bin/initdb") if DEBIAN_SERVERS.is_dir() else iter(())
    versioned = [(_version(initdb.parent.parent.name), initdb.parent) for initdb in candidates]
    if versioned:
        return max(versioned)[1]
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


class PgCluster:
    """A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1:<free port>, `trust` auth.

    `fast` (the default, for tests) turns off fsync, synchronous commit and full-page writes and puts the
    cluster in memory (/dev/shm) when there is room; a benchmark passes `fast=False` to measure with
    PostgreSQL's defaults on disk. `settings` adds or overrides server settings; `directory` is where the
    cluster's temporary directory goes (default: as just said, else the system's temporary directory).
    Use as a context manager, or call `start()` and `stop()`.

    Raises:
        PostgresUnavailableError: no server binaries, or as root no `postgres` user or `runuser`.
    """

    def __init__(
        self,
        *,
        fast: bool = True,
        max_connections: int = 200,
        settings: Mapping[str, str] | None = None,
        bindir: Path | None = None,
        directory: Path | None = None,
    ) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise PostgresUnavailableError(
                f"no PostgreSQL server binaries ({DEBIAN_SERVERS}/*/bin/initdb, or initdb on PATH): "
                "install Debian's `postgresql` package (scripts/setup.sh does)"
            )
        self.bindir = found
        self.fast = fast
        self.directory = directory
        self.settings: dict[str, str] = {
            "max_connections": str(max_connections),
            **(FAST_SETTINGS if fast else {}),
            **(settings or {}),
        }
        self._run_as = _run_as_prefix() if os.geteuid() == 0 else []
        self.port = 0
        self._base: Path | None = None

    @property
    def base(self) -> Path:
        """The cluster's temporary directory (data, socket directory, server log); only while started."""
        if self._base is None:
            raise RuntimeError("the cluster is not started")
        return self._base

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "socket"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        """initdb, start the server and wait until it accepts connections.

        Raises:
            RuntimeError: initdb or the server failed (the message ends with the server log).
        """
        if self._base is not None:
            raise RuntimeError(f"the cluster in {self._base} is already started")
        self._base = self._make_base()
        try:
            self._initdb()
            for attempt in range(1, START_ATTEMPTS + 1):
                self.port = _free_port()
                started = self._pg_ctl("start", "-w", "-t", str(START_TIMEOUT_S), "-o", f"-p {self.port}")
                if started.returncode == 0:
                    break
                port_taken = "Address already in use" in self._log_tail()
                if not port_taken or attempt == START_ATTEMPTS:
                    raise RuntimeError(self._failure("pg_ctl start", started))
            self._wait_until_accepting()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended) and remove its directory. Idempotent."""
        if self._base is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            stopped = self._pg_ctl("stop", "-w", "-m", "fast")
            if stopped.returncode != 0:
                self._pg_ctl("stop", "-w", "-m", "immediate")
        shutil.rmtree(self._base, ignore_errors=True)
        self._base = None

    def __enter__(self) -> PgCluster:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database `name`, a copy of `template` (default template0: empty); return its URL."""
        with self._admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template or "template0")
                )
            )
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name` if it exists, ending any session still connected to it."""
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def _admin(self) -> psycopg.Connection[TupleRow]:
        # Autocommit: CREATE and DROP DATABASE cannot run inside a transaction.
        return psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5)

    def _make_base(self) -> Path:
        base = Path(tempfile.mkdtemp(prefix="relayer-pg-", dir=self._parent()))
        if self._run_as:
            # The server user must reach its directory: the parents traversable (`_parent`), this one its own.
            user = pwd.getpwnam(SERVER_USER)
            os.chown(base, user.pw_uid, user.pw_gid)
        return base

    def _parent(self) -> Path:
        if self.directory is not None:
            return self.directory
        candidates = [Path(tempfile.gettempdir()), Path("/tmp")]
        if self.fast and TMPFS.is_dir() and shutil.disk_usage(TMPFS).free >= TMPFS_MIN_FREE_BYTES:
            candidates.insert(0, TMPFS)
        for candidate in candidates:
            if not self._run_as or _traversable(candidate):
                return candidate
        raise PostgresUnavailableError(
            f"no temporary directory the `{SERVER_USER}` user can reach: {', '.join(map(str, candidates))}"
        )

    def _initdb(self) -> None:
        # --auth=trust covers local sockets and 127.0.0.1/::1; -N (no sync): a throwaway cluster need not be
        # flushed to disk; the C locale makes sorting the same on every machine.
        done = self._run(
            "initdb",
            [
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-N",
            ],
        )
        if done.returncode != 0:
            raise RuntimeError(self._failure("initdb", done))
        self.socket_dir.mkdir()
        if self._run_as:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.socket_dir, user.pw_uid, user.pw_gid)
        server = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir),
            **self.settings,
        }
        # Appended settings override initdb's; every value quoted (PostgreSQL accepts that for any type).
        lines = [f"{name} = '{value.replace(chr(39), chr(39) * 2)}'" for name, value in server.items()]
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/pg.py\n" + "\n".join(lines) + "\n")

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run("pg_ctl", ["-D", str(self.data_dir), "-l", str(self.log_file), *args])

    def _run(self, tool: str, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        # The server's own output goes to the log file (pg_ctl -l), so these pipes close when the tool exits.
        return subprocess.run(
            [*self._run_as, str(self.bindir / tool), *args],
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S + 30,
            check=False,
        )

    def _wait_until_accepting(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                    return
            except psycopg.OperationalError as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL on port {self.port} did not accept connections within "
                        f"{START_TIMEOUT_S} s: {error}\n{self._log_tail()}"
                    ) from error
                time.sleep(0.05)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _failure(self, what: str, done: subprocess.CompletedProcess[str]) -> str:
        return (
            f"{what} failed with code {done.returncode} ({self.bindir}):\n{done.stdout}{done.stderr}"
            f"\nserver log:\n{self._log_tail()}"
        )


def _version(name: str) -> tuple[int, ...]:
    """'15' -> (15,), '9.6' -> (9, 6); a directory not named by a version sorts first."""
    parts = name.split(".")
    return tuple(int(part) for part in parts) if all(part.isdigit() for part in parts) else ()


def _run_as_prefix() -> list[str]:
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailableError("running PostgreSQL as root needs `runuser` (util-linux)")
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresUnavailableError(
            f"running PostgreSQL as root needs a `{SERVER_USER}` user (the package `postgresql` makes it)"
        ) from None
    return [runuser, "-u", SERVER_USER, "--"]


def _traversable(path: Path) -> bool:
    """Whether any user can reach into `path` (o+x on it and every parent)."""
    return all(os.stat(part).st_mode & stat.S_IXOTH for part in (path.resolve(), *path.resolve().parents))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
