"""A private, throw-away PostgreSQL cluster for tests (``initdb`` + ``pg_ctl``).

The cluster lives in a fresh directory under the system temp dir, listens on
127.0.0.1 on a free port and keeps its unix socket in that directory, so it touches
nothing of the machine's own PostgreSQL. Durability is switched off (fsync, full page
writes, synchronous commit): a test database is disposable and speed matters.

Running as root: ``initdb`` and ``postgres`` refuse to run as root. The commands then
run as the ``postgres`` system user (Debian's server package creates it) or, failing
that, ``nobody``, with the cluster directory chowned to that user. Python's
``subprocess`` drops the privileges itself (``user=``/``group=``), so neither ``su``
nor ``runuser`` is needed.

Use :func:`find_pg_bin` to decide whether to skip, then :class:`PgCluster` as a
context manager; ``new_database()`` gives each test its own empty database.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from tests.support.net import free_port

SUPERUSER = "stoic"


def find_pg_bin() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``/``postgres``: PATH first, then Debian's
    ``/usr/lib/postgresql/<version>/bin`` (newest). None when no server is installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def version(p: str) -> float:
        try:
            return float(Path(p).parts[-3])
        except ValueError:
            return 0.0

    return Path(max(candidates, key=version)).parent if candidates else None


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The user to run the server as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists")


class PgCluster:
    """One running PostgreSQL cluster; stop it with :meth:`stop` (or ``with``)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.user = _unprivileged_user()
        self.base = Path(tempfile.mkdtemp(prefix="stoic-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = 0
        self._names = itertools.count(1)
        if self.user is not None:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        u = self.user
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "HOME": str(self.base),
        }
        proc = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.base,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            user=None if u is None else u.pw_uid,
            group=None if u is None else u.pw_gid,
            extra_groups=None if u is None else [],
        )
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}{log}"
            )
        return proc

    def start(self) -> PgCluster:
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        last: Exception | None = None
        for _ in range(3):  # the free port may be taken between probe and bind
            self.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=50"
            )
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                    "-o", options, "start",
                )  # fmt: skip
                return self
            except RuntimeError as exc:
                last = exc
        raise RuntimeError(f"PostgreSQL did not start: {last}")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        name = f"t{next(self._names)}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)
