"""A private, throw-away PostgreSQL server from the Debian binaries (tests' ``postgres_url`` fixture, benchmarks).

initdb into a temp dir, TCP on 127.0.0.1 at a free port (scram password auth), unix socket in the temp dir
(trust, used only for setup), run as the ``postgres`` system user when we are root (PostgreSQL refuses to run as
root). :meth:`PrivatePostgres.stop` runs ``pg_ctl stop -m fast`` and removes the folder whatever happens.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from typing import List, Optional
from urllib.parse import quote


class NoServerUser(RuntimeError):
    """Running as root without a ``postgres`` system user to run the server as."""


def postgres_bin_dir() -> Optional[str]:
    """The newest ``/usr/lib/postgresql/<version>/bin`` (Debian), else the folder of ``initdb`` on PATH."""
    candidates = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'),
                        key=lambda p: int(p.split('/')[-3]) if p.split('/')[-3].isdigit() else 0)
    if candidates:
        return os.path.dirname(candidates[-1])
    found = shutil.which('initdb')
    return os.path.dirname(found) if found else None


def free_tcp_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class PrivatePostgres:
    """One started server with one login role and one database owned by it; ``url`` has user and password."""

    def __init__(self, bin_dir: str, user: str = 'detkds', password: str = 'T3st-p@ss:w/rd',
                 database: str = 'detkds_test'):
        import pwd
        self.bin_dir = bin_dir
        self.run_as: List[str] = []
        self.tmp = tempfile.mkdtemp(prefix='detkds-pg-')
        self.started = False
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam('postgres')
            except KeyError:
                shutil.rmtree(self.tmp, ignore_errors=True)
                raise NoServerUser('running as root and no `postgres` system user to run the server as') from None
            os.chown(self.tmp, account.pw_uid, account.pw_gid)
            self.run_as = ['runuser', '-u', 'postgres', '--']
        os.chmod(self.tmp, 0o700)
        self.data_dir, self.port = os.path.join(self.tmp, 'data'), free_tcp_port()
        try:
            self._run('initdb', '-D', self.data_dir, '-U', 'detkds_admin', '--auth-local=trust',
                      '--auth-host=scram-sha-256', '--no-sync', '-E', 'UTF8')
            self._run('pg_ctl', '-D', self.data_dir, '-l', os.path.join(self.tmp, 'server.log'), '-w', '-t', '30',
                      '-o', f'-c listen_addresses=127.0.0.1 -p {self.port} -k {self.tmp} -c fsync=off '
                      '-c max_connections=200', 'start')
            self.started = True
            self._psql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
            self._psql(f'CREATE DATABASE {database} OWNER {user}')
        except BaseException:
            self.stop()
            raise
        self.url = f'postgresql://{user}:{quote(password, safe="")}@127.0.0.1:{self.port}/{database}'

    def _run(self, *args: str) -> str:
        # cwd=tmp: the server user may not be allowed into the caller's working directory.
        result = subprocess.run(self.run_as + [os.path.join(self.bin_dir, args[0]), *args[1:]], cwd=self.tmp,
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f'{args[0]} failed: {result.stdout}\n{result.stderr}')
        return result.stdout

    def _psql(self, sql: str) -> str:
        return self._run('psql', '-h', self.tmp, '-p', str(self.port), '-U', 'detkds_admin', '-d', 'postgres',
                         '-v', 'ON_ERROR_STOP=1', '-c', sql)

    def stop(self) -> None:
        """Stop the server (if started) and remove its folder; a failed stop is printed, not raised."""
        if self.started:
            self.started = False
            try:
                self._run('pg_ctl', '-D', self.data_dir, '-m', 'fast', '-w', '-t', '30', 'stop')
            except Exception as exc:  # still remove the folder; report the leak
                print(f'[postgres server] stop failed: {exc}')
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> 'PrivatePostgres':
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
