"""Optuna storage for the search: one URL -> one checked storage object, credentials never shown in clear.

Storage is the record of truth of a search (`--storage URL`); every result a user sees is rebuilt from it.

URL forms (``resolve_storage_url`` turns the user's value into one of these):

- none given -> ``journal://<absolute run dir>/study.journal``: an Optuna journal file in the run folder
  (embedded, no server). ``journal://PATH``, ``file://PATH`` and a plain path (no scheme) name a journal file
  explicitly; a relative PATH is taken from the current directory.
- ``postgresql://`` / ``postgresql+DRIVER://`` (``postgres://`` is accepted as ``postgresql://``): Optuna's
  ``RDBStorage``; needs the ``postgres`` extra (psycopg2).
- ``mongodb://`` / ``mongodb+srv://``: ``JournalStorage(MongoJournalBackend(url))`` below. The database is the
  URL's path (``mongodb://host/DB``), ``detkds`` when the URL names none.
- ``sqlite://`` is refused: Optuna advises against SQLite for parallel writers (DetKDS's reference used it).

Credentials: a URL with a user but no password (``postgresql://alice@db/search``) takes the password from the
environment variable ``DETKDS_STORAGE_PASSWORD`` when it is set (otherwise the driver's own mechanisms apply,
e.g. libpq's ``PGPASSWORD`` / ``~/.pgpass``). Every message and log line written here shows the URL through
``mask_url`` and driver messages through ``redact``; other modules must do the same for status, logs, trial
attributes and exported files.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from typing import Any, Callable, Iterator
from urllib.parse import quote, unquote

import optuna
from optuna.storages.journal import BaseJournalBackend

from distill_core.errors import ConfigError, DetKDSError

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- trial user-attribute names
# One name per attribute, used by the controller, the workers, status, report and export alike.
ATTR_GENOME = 'genome'            # JSON text of the genome
ATTR_FORMULA = 'formula'          # human-readable formula of the genome
ATTR_STAGE = 'stage'              # search stage (e.g. 'proxy', 'full')
ATTR_GENERATION = 'generation'    # evolution generation index
ATTR_PARENTS = 'parents'          # trial numbers of the parents
ATTR_SEED = 'seed'                # seed the trial ran with
ATTR_WALL_TIME = 'wall_time'      # seconds the trial took
ATTR_FAIL_REASON = 'fail_reason'  # one-line reason of a FAIL state (masked)

PASSWORD_ENV = 'DETKDS_STORAGE_PASSWORD'
JOURNAL_FILE_NAME = 'study.journal'
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MONGO_DATABASE = 'detkds'
MASK = '***'

_JOURNAL_SCHEMES = ('journal', 'file')
_POSTGRES_SCHEMES = ('postgresql', 'postgres')
_MONGO_SCHEMES = ('mongodb', 'mongodb+srv')
# Query parameters whose values are secrets (password=..., authMechanismProperties tokens, ...).
_SECRET_QUERY_RE = re.compile(
    r'(?P<key>[?&;][^=&;#]*(?:password|passwd|pwd|secret|token)[^=&;#]*=)(?P<value>[^&;#]*)', re.IGNORECASE)


class StorageError(DetKDSError):
    """The storage cannot be used: unreachable, refused, bad credentials, missing database, broken log."""


# --------------------------------------------------------------------------- URL handling
def _scheme(url: str) -> str:
    head, sep, _ = url.partition('://')
    return head.lower() if sep else ''


def _split_credentials(url: str, lenient: bool = False) -> tuple[str, str | None, str | None, str]:
    """Split ``scheme://user:password@rest`` into (``scheme://``, user, password, ``@rest``).

    user/password are None when absent; the password is returned as written (percent-encoded). Multi-host
    authorities (``mongodb://u:p@h1,h2/db``) are handled because only the userinfo is cut out. ``lenient``
    (for masking only) also finds a password that contains an unencoded '/', '?' or '#'.
    """
    head, sep, rest = url.partition('://')
    if not sep:
        return '', None, None, url
    authority_end = len(rest)
    for stop in '/?#':
        index = rest.find(stop)
        if index >= 0:
            authority_end = min(authority_end, index)
    at = rest.rfind('@', 0, authority_end)
    if at < 0 and lenient:
        # No '@' in the authority: a password with an unencoded '/', '?' or '#' still has its '@' further on.
        # Masking too much is harmless; missing a password is not.
        at = rest.rfind('@')
        if at < 0 or ':' not in rest[:at]:
            return head + sep, None, None, rest
    if at < 0:
        return head + sep, None, None, rest
    userinfo = rest[:at]
    user, colon, password = userinfo.partition(':')
    return head + sep, user, (password if colon else None), rest[at:]


def mask_url(url: str | None) -> str:
    """``url`` with any password (userinfo or secret query parameter) replaced by ``***``."""
    if not url:
        return ''
    if _scheme(url) in ('', *_JOURNAL_SCHEMES):
        return url  # a file path has no credentials; '@' or ':' in it are part of the name
    head, user, password, rest = _split_credentials(url, lenient=True)
    if password:
        url = f'{head}{user}:{MASK}{rest}'
    return _SECRET_QUERY_RE.sub(lambda m: m.group('key') + MASK, url)


def _secrets_of(url: str) -> list[str]:
    """Every secret string that may appear verbatim in a driver message: raw, decoded and encoded forms."""
    found: set[str] = set()
    _, _, password, _ = _split_credentials(url, lenient=True)
    values = [password] if password else []
    values += [m.group('value') for m in _SECRET_QUERY_RE.finditer(url) if m.group('value')]
    for value in values:
        found.update({value, unquote(value), quote(unquote(value), safe='')})
    found.discard('')
    # Longest first so that a secret containing another is replaced whole.
    return sorted(found, key=len, reverse=True)


def redact(text: str, url: str | None) -> str:
    """``text`` with ``url`` shown masked and every secret of ``url`` replaced by ``***``.

    Driver exceptions may quote the URL or the password; pass every such text through here before showing it.
    """
    text = str(text)
    if not url:
        return text
    text = text.replace(url, mask_url(url))
    for secret in _secrets_of(url):
        text = text.replace(secret, MASK)
    return text


def apply_env_password(url: str) -> str:
    """Insert ``$DETKDS_STORAGE_PASSWORD`` when ``url`` names a user but no password; else ``url`` unchanged."""
    password = os.environ.get(PASSWORD_ENV)
    head, user, url_password, rest = _split_credentials(url)
    if not password or not user or url_password is not None:
        return url
    return f'{head}{user}:{quote(password, safe="")}{rest}'


def resolve_storage_url(url: str | None, run_dir: str) -> str:
    """The canonical storage URL for ``--storage url`` and ``--run-dir run_dir`` (see the module doc).

    None/empty -> ``journal://<abs run_dir>/study.journal``; a journal path becomes ``journal://<abs path>``;
    server URLs are returned unchanged (credentials are added later by ``open_storage``). Raises ConfigError
    for sqlite and unknown schemes.
    """
    if not url:
        return 'journal://' + os.path.abspath(os.path.join(run_dir, JOURNAL_FILE_NAME))
    scheme = _scheme(url)
    if scheme in ('', *_JOURNAL_SCHEMES):
        path = url.split('://', 1)[1] if scheme else url
        if not path:
            raise ConfigError(f'--storage {mask_url(url)}: the journal URL names no file')
        return 'journal://' + os.path.abspath(os.path.expanduser(path))
    if scheme.startswith('sqlite'):
        raise ConfigError(
            f'--storage {mask_url(url)}: SQLite is not supported: parallel trial writers lock it '
            '("database is locked"). Use the default journal file (omit --storage), postgresql:// or mongodb://.')
    if scheme == 'postgres':
        return 'postgresql' + url[len('postgres'):]
    if scheme in _POSTGRES_SCHEMES or scheme.startswith('postgresql+') or scheme in _MONGO_SCHEMES:
        return url
    raise ConfigError(
        f'--storage {mask_url(url)}: unknown storage scheme {scheme!r}; use a journal file path, '
        'postgresql://USER@HOST/DB or mongodb://USER@HOST/DB')


def journal_path(url: str) -> str | None:
    """The file of a resolved ``journal://`` URL, None for server storage."""
    return url.split('://', 1)[1] if _scheme(url) == 'journal' else None


# --------------------------------------------------------------------------- opening
def open_storage(url: str | None, run_dir: str | None = None, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> optuna.storages.BaseStorage:
    """Resolve, check and open the storage; raise StorageError/ConfigError before anything is written.

    ``run_dir`` is needed only when ``url`` is None (the default journal file lives there). The check connects
    within ``timeout_s`` and proves read and write rights, so a search never starts on a storage it cannot use.
    """
    if not url and not run_dir:
        raise ConfigError('no --storage URL and no --run-dir to put the default journal file in')
    url = apply_env_password(resolve_storage_url(url, run_dir or '.'))
    scheme = _scheme(url)
    logger.info('opening storage %s', mask_url(url))
    if scheme == 'journal':
        return _open_journal_file(journal_path(url))
    if scheme in _MONGO_SCHEMES:
        backend = MongoJournalBackend(url, timeout_s=timeout_s)
        backend.check()
        return _guarded(url, lambda: optuna.storages.JournalStorage(backend))
    return _open_postgres(url, timeout_s)


def _guarded(url: str, build: Callable[[], Any]) -> Any:
    """Run ``build``; turn a driver exception into a one-line masked StorageError."""
    try:
        return build()
    except DetKDSError:
        raise
    except Exception as exc:  # drivers raise many types; each is reported the same way
        raise StorageError(f'storage {mask_url(url)}: {_one_line(redact(exc, url))}') from None


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else 'unknown error'


def _open_journal_file(path: str) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'ab'):
            pass  # proves the folder is writable before anything else happens
    except OSError as exc:
        raise StorageError(f'storage journal://{path}: cannot create the journal file: {exc.strerror}') from None
    # The O_EXCL lock file is safe for several processes on one machine (and on NFSv3+); it needs no symlink
    # rights, unlike Optuna's default symlink lock.
    backend = JournalFileBackend(path, lock_obj=JournalFileOpenLock(path))
    return _guarded('journal://' + path, lambda: optuna.storages.JournalStorage(backend))


def _postgres_connect_args(timeout_s: float) -> dict[str, Any]:
    return {'connect_timeout': max(1, int(round(timeout_s))), 'application_name': 'detkds-search'}


def _with_postgres_driver(url: str) -> str:
    """Name the installed driver in a bare ``postgresql://`` URL.

    SQLAlchemy's default driver for a bare URL changed (psycopg2 in 2.0, psycopg 3 in 2.1); the ``postgres``
    extra installs psycopg2, so use whichever is present instead of the version-dependent default.
    """
    if _scheme(url) != 'postgresql':
        return url
    import importlib.util

    for module, driver in (('psycopg2', 'psycopg2'), ('psycopg', 'psycopg')):
        if importlib.util.find_spec(module) is not None:
            return f'postgresql+{driver}' + url[len('postgresql'):]
    return url


def _open_postgres(url: str, timeout_s: float) -> optuna.storages.RDBStorage:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    shown, url = url, _with_postgres_driver(url)  # messages show the URL as the user wrote it
    try:
        probe = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=_postgres_connect_args(timeout_s))
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as exc:
        raise StorageError(f'storage {mask_url(shown)}: database driver missing ({_one_line(exc)}); '
                           'install the postgres extra: pip install "detkds-search[postgres]"') from None
    except Exception as exc:  # ArgumentError, ValueError (bad port), ...
        raise StorageError(f'storage {mask_url(shown)}: malformed URL: {_one_line(redact(exc, url))}') from None
    try:
        with probe.connect() as connection:
            connection.execute(sqlalchemy.text('SELECT 1'))
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StorageError(f'storage {mask_url(shown)}: {_postgres_failure(redact(exc, url), timeout_s)}') from None
    finally:
        probe.dispose()
    # Every Ray worker process holds its own pool: keep it small so that many workers stay under the server's
    # max_connections; pre-ping and recycle survive server restarts and idle-connection reaping by proxies.
    engine_kwargs = {
        'pool_pre_ping': True, 'pool_size': 1, 'max_overflow': 3, 'pool_recycle': 1800, 'pool_timeout': 60,
        'connect_args': _postgres_connect_args(timeout_s),
    }
    try:  # creates Optuna's tables when missing: fails here on a database the user may not write
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as exc:  # SQLAlchemy errors, Optuna's schema-version errors
        raise StorageError(f'storage {mask_url(shown)}: {_postgres_failure(redact(exc, url), timeout_s)}') from None


def _postgres_failure(message: str, timeout_s: float) -> str:
    """A one-line cause for a failed PostgreSQL connection (message already redacted)."""
    lowered = message.lower()
    detail = _one_line(re.sub(r'^\s*\([\w.]+\)\s*', '', message))  # drop SQLAlchemy's "(driver.Error)" tag
    if 'password authentication failed' in lowered or 'no password supplied' in lowered:
        return f'authentication failed (check the user and the password or ${PASSWORD_ENV}): {detail}'
    if 'does not exist' in lowered and 'database' in lowered:
        return f'database missing: {detail}'
    if 'permission denied' in lowered or 'not permitted' in lowered:
        return f'not authorised: {detail}'
    if 'connection refused' in lowered:
        return f'connection refused (is the server running and listening there?): {detail}'
    if 'timeout expired' in lowered or 'timed out' in lowered:
        return f'no answer within {timeout_s:g} s: {detail}'
    if 'could not translate host name' in lowered or 'name or service not known' in lowered:
        return f'unknown host: {detail}'
    return f'cannot use the database: {detail}'


# --------------------------------------------------------------------------- MongoDB journal backend
class MongoJournalBackend(BaseJournalBackend):
    """Optuna journal log on MongoDB (pymongo): one gap-free, totally ordered log shared by every process.

    Layout (database from the URL): collection ``<namespace>_logs`` holds one document per log,
    ``{_id: number, log: <JSON text>, token: <writer's random id>}`` (``_id`` is the unique index on the number;
    the log is JSON text because Optuna's keys may contain '.' or start with '$', which MongoDB fields may not);
    ``<namespace>_meta`` holds the counter ``{_id: 'log_counter', reserved: N}``: numbers ``0..N-1`` are taken.

    Writing: ``append_logs`` reserves ``len(logs)`` numbers with one atomic ``$inc`` (``find_one_and_update``,
    ``ReturnDocument.AFTER``, upsert) and inserts the logs under them. No locks: the counter orders the writers.

    Reading: ``read_logs(n)`` reads the counter first, then yields logs ``n..N-1`` in order. A number that is
    reserved but not inserted yet (a writer between its ``$inc`` and its insert) is never skipped: the reader
    waits for it. If it stays missing for ``gap_timeout_s`` the writer is taken as dead (crashed between the two
    steps) and the reader fills the number with a tombstone, a no-op log for Optuna's replay. The unique ``_id``
    settles the race with a writer that was only slow: exactly one of the tombstone and the log is stored; a
    writer that loses re-appends its log under a new number (it has not returned yet, so nobody depends on its
    position). Every process therefore sees the same sequence. A writer that fails for good (network) tombstones
    the numbers it reserved but did not fill, so readers need not wait, and raises StorageError (if the failure
    hid a successful insert, that log stays: a RUNNING trial the controller reconciles like any orphan).

    Snapshots (Optuna's optional ``BaseJournalSnapshot``) are deliberately not implemented: Optuna 5 does not
    need them, and they are pickles, so anyone able to write the database could run code in every reader.
    """

    COUNTER_ID = 'log_counter'
    # A no-op for Optuna's replay (any version): a system attribute for a study id that never exists, issued by
    # a worker id no JournalStorage has, so it is ignored instead of raising.
    TOMBSTONE_LOG = {'op_code': 3, 'worker_id': 'detkds-tombstone', 'study_id': -1, 'system_attr': {}}

    def __init__(self, url: str, *, namespace: str = 'optuna_journal', database: str | None = None,
                 gap_timeout_s: float = 30.0, timeout_s: float = DEFAULT_TIMEOUT_S, client: Any = None) -> None:
        """``client``: an existing pymongo-compatible client (tests); default: a pymongo client for ``url``."""
        self._url = url
        self._namespace = namespace
        self._database = database or _mongo_database_of(url)
        self.gap_timeout_s = gap_timeout_s
        self._timeout_s = timeout_s
        self._injected_client = client
        self._client: Any = None
        self._client_pid = -1
        self._client_lock = threading.Lock()

    # Pickling (Ray, multiprocessing) carries the URL, never a live client: clients are not fork-safe.
    def __getstate__(self) -> dict[str, Any]:
        if self._injected_client is not None:
            raise TypeError('a MongoJournalBackend built on an injected client cannot be pickled')
        state = self.__dict__.copy()
        state['_client'], state['_client_pid'] = None, -1
        del state['_client_lock']
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f'MongoJournalBackend({mask_url(self._url)!r}, namespace={self._namespace!r})'

    # ---- collections
    def _db(self) -> Any:
        if self._injected_client is not None:
            return self._injected_client[self._database]
        with self._client_lock:
            # One client per process: a client inherited through fork is not usable (pymongo is not fork-safe).
            if self._client is None or self._client_pid != os.getpid():
                import pymongo

                timeout_ms = int(self._timeout_s * 1000)
                self._client = pymongo.MongoClient(self._url, serverSelectionTimeoutMS=timeout_ms,
                                                   connectTimeoutMS=timeout_ms, appname='detkds-search')
                self._client_pid = os.getpid()
            return self._client[self._database]

    @property
    def _logs(self) -> Any:
        return self._db()[f'{self._namespace}_logs']

    @property
    def _meta(self) -> Any:
        return self._db()[f'{self._namespace}_meta']

    # ---- checks
    def check(self) -> None:
        """Connect, authenticate and prove read/write rights within the timeout; StorageError otherwise."""
        try:
            self._db().command('ping')
            self._meta.update_one({'_id': self.COUNTER_ID}, {'$setOnInsert': {'reserved': 0}}, upsert=True)
            self._logs.find_one({}, projection={'_id': 1})
        except Exception as exc:  # pymongo raises many types; all mean "cannot use this storage"
            raise StorageError(f'storage {mask_url(self._url)}: {self._failure(exc)}') from None

    def _failure(self, exc: Exception) -> str:
        import pymongo.errors as errors

        detail = _one_line(redact(exc, self._url))
        if isinstance(exc, errors.OperationFailure):
            if exc.code == 18:
                return f'authentication failed (check the user and the password or ${PASSWORD_ENV}): {detail}'
            if exc.code == 13:
                return f'not authorised on database {self._database!r}: {detail}'
        if isinstance(exc, errors.ServerSelectionTimeoutError):
            # pymongo appends its whole topology description: keep the first server's error only.
            detail = re.sub(r' \(configured timeouts:[^)]*\)', '', detail.split(', Timeout:')[0])
            return f'no server answered within {self._timeout_s:g} s: {detail}'
        if isinstance(exc, (errors.ConfigurationError, errors.InvalidURI)):
            return f'malformed URL or settings: {detail}'
        return f'cannot use the database: {detail}'

    # ---- writing
    def _reserve(self, count: int) -> int:
        """Atomically take ``count`` consecutive numbers; return the first."""
        from pymongo import ReturnDocument

        counter = self._meta.find_one_and_update(
            {'_id': self.COUNTER_ID}, {'$inc': {'reserved': count}}, upsert=True,
            return_document=ReturnDocument.AFTER)
        return int(counter['reserved']) - count

    def _insert(self, document: dict[str, Any]) -> bool:
        """Insert ``document`` under its number; False when that number is already filled by someone else.

        A connection error leaves the outcome unknown, so the insert is retried; the token tells whether a
        duplicate is our own earlier attempt.
        """
        import pymongo.errors as errors

        for attempt in range(3):
            try:
                self._logs.insert_one(dict(document))
                return True
            except errors.DuplicateKeyError:
                stored = self._logs.find_one({'_id': document['_id']}, projection={'token': 1})
                return stored is not None and stored.get('token') == document['token']
            except errors.ConnectionFailure:
                if attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))
        return False  # unreachable

    def _tombstone(self, number: int) -> None:
        """Mark ``number`` as dead (never to hold a log); a number already filled is left as it is."""
        import pymongo.errors as errors

        try:
            self._logs.insert_one({'_id': number, 'tombstone': True, 'token': 'tombstone'})
        except errors.DuplicateKeyError:
            pass

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        pending = [json.dumps(log, separators=(',', ':')) for log in logs]
        while pending:
            first, written = None, 0
            try:
                first = self._reserve(len(pending))
                for written, payload in enumerate(pending):
                    if not self._insert({'_id': first + written, 'log': payload, 'token': uuid.uuid4().hex}):
                        break  # a reader took us for dead and tombstoned this number: re-append from here
                else:
                    return
            except Exception as exc:
                if first is not None:
                    self._release(first + written, first + len(pending))
                raise StorageError(f'storage {mask_url(self._url)}: writing the journal failed: '
                                   f'{_one_line(redact(exc, self._url))}') from None
            self._release(first + written + 1, first + len(pending))
            pending = pending[written:]

    def _release(self, start: int, stop: int) -> None:
        """Tombstone reserved numbers ``start..stop-1`` this writer will not fill (best effort)."""
        for number in range(start, stop):
            try:
                self._tombstone(number)
            except Exception:  # the database is failing: readers will tombstone after their timeout instead
                logger.warning('could not release journal number %d in %s', number, mask_url(self._url))
                return

    # ---- reading
    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        import pymongo.errors as errors

        try:
            yield from self._read_logs(log_number_from)
        except errors.PyMongoError as exc:
            raise StorageError(f'storage {mask_url(self._url)}: reading the journal failed: '
                               f'{_one_line(redact(exc, self._url))}') from None

    def _read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        counter = self._meta.find_one({'_id': self.COUNTER_ID})
        reserved = int(counter['reserved']) if counter else 0
        next_number = log_number_from
        gap_since: float | None = None
        pause = 0.002
        while next_number < reserved:
            progressed = False
            for document in self._logs.find({'_id': {'$gte': next_number, '$lt': reserved}}, sort=[('_id', 1)]):
                if document['_id'] != next_number:
                    break  # next_number is reserved but not written yet
                yield self._decode(document)
                next_number += 1
                progressed = True
            if next_number >= reserved:
                return
            now = time.monotonic()
            if progressed or gap_since is None:
                gap_since, pause = now, 0.002
            elif now - gap_since >= self.gap_timeout_s:
                logger.warning('journal number %d in %s stayed empty for %.1f s (writer presumed dead): '
                               'filling it with a no-op', next_number, mask_url(self._url), now - gap_since)
                self._tombstone(next_number)
                gap_since = None
                continue
            time.sleep(pause)
            pause = min(pause * 2, 0.2)

    def _decode(self, document: dict[str, Any]) -> dict[str, Any]:
        if document.get('tombstone'):
            return dict(self.TOMBSTONE_LOG)
        return json.loads(document['log'])


def _mongo_database_of(url: str) -> str:
    """The database named by a MongoDB URL's path, ``detkds`` when there is none."""
    _, _, _, rest = _split_credentials(url)
    path = rest.split('/', 1)[1] if '/' in rest else ''
    name = unquote(path.split('?', 1)[0])
    return name or DEFAULT_MONGO_DATABASE

