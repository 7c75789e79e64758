"""search/storage.py: journal file and PostgreSQL under 8 concurrent writer processes, credential masking,
up-front connection errors, and the MongoDB journal backend's ordering and gap logic.

MongoDB: no server can be installed on these machines, so the backend runs on mongomock by default, with every
single collection operation made atomic (what a real server guarantees and mongomock does not), so that the
interleavings between operations, which are the backend's own logic, are real. Set DETKDS_TEST_MONGO_URL
(e.g. mongodb://user:pw@host/detkds_test) to run the same tests against a real server as well.
"""
from __future__ import annotations

import io
import json
import multiprocessing
import os
import pickle
import socket
import sys
import threading
import time
import uuid
from urllib.parse import quote, unquote

import optuna
import pytest
from optuna.trial import TrialState

from distill_core.errors import ConfigError, DetKDSError
from search import storage as st
from search.storage import MongoJournalBackend, StorageError, mask_url, open_storage, redact, resolve_storage_url

optuna.logging.set_verbosity(optuna.logging.WARNING)

N_WRITERS, TRIALS_PER_WRITER = 8, 10


# --------------------------------------------------------------------------- shared trial script
def _expected(writer: int, index: int) -> dict:
    """What writer `writer` stores for its `index`-th trial: a pure function, so readers can check it."""
    seed = writer * 1000 + index
    outcome = ('complete', 'fail', 'pruned')[index % 3]
    return {
        'seed': seed,
        'outcome': outcome,
        'genome': json.dumps({'transform': ['mask_gt', 'norm'][index % 2], 'weight': seed / 7.0}),
        'formula': f'w{writer}*mse(T(f_s), T(f_t))#{index}',
        'intermediate': {step: round(0.01 * (seed % 97) + 0.1 * step, 6) for step in range(3)},
        'value': round((seed % 101) / 101.0, 6),
        'reason': f'CUDA out of memory in trial {seed}',
    }


def _write_trials(storage: optuna.storages.BaseStorage, study_name: str, writer: int) -> dict[int, int]:
    """Run writer `writer`'s trials through ask/tell; return {seed: trial number as the writer saw it}."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    numbers = {}
    for index in range(TRIALS_PER_WRITER):
        spec = _expected(writer, index)
        trial = study.ask()
        trial.set_user_attr(st.ATTR_GENOME, spec['genome'])
        trial.set_user_attr(st.ATTR_FORMULA, spec['formula'])
        trial.set_user_attr(st.ATTR_STAGE, 'proxy')
        trial.set_user_attr(st.ATTR_GENERATION, index // 4)
        trial.set_user_attr(st.ATTR_PARENTS, [writer, index])
        trial.set_user_attr(st.ATTR_SEED, spec['seed'])
        for step, value in spec['intermediate'].items():
            trial.report(value, step)
        trial.set_user_attr(st.ATTR_WALL_TIME, 1.5)
        if spec['outcome'] == 'complete':
            study.tell(trial, spec['value'])
        elif spec['outcome'] == 'fail':
            trial.set_user_attr(st.ATTR_FAIL_REASON, spec['reason'])
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, state=TrialState.PRUNED)
        numbers[spec['seed']] = trial.number
    return numbers


def _writer_process(url: str, study_name: str, writer: int, queue) -> None:
    try:
        queue.put((writer, _write_trials(open_storage(url), study_name, writer)))
    except BaseException as exc:  # report instead of hanging the parent
        queue.put((writer, repr(exc)))


def _check_trials(trials: list, seen_numbers: dict[int, int]) -> None:
    """All writers' trials present, numbers unique and gap-free, attributes, values and states intact."""
    assert len(trials) == N_WRITERS * TRIALS_PER_WRITER
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert len({t._trial_id for t in trials}) == len(trials)
    expected_states = {'complete': TrialState.COMPLETE, 'fail': TrialState.FAIL, 'pruned': TrialState.PRUNED}
    by_seed = {t.user_attrs[st.ATTR_SEED]: t for t in trials}
    assert set(by_seed) == set(seen_numbers)
    for seed, trial in by_seed.items():
        writer, index = divmod(seed, 1000)
        spec = _expected(writer, index)
        assert trial.number == seen_numbers[seed]  # every process agrees on the numbering
        assert trial.state == expected_states[spec['outcome']]
        assert trial.user_attrs[st.ATTR_GENOME] == spec['genome']
        assert json.loads(trial.user_attrs[st.ATTR_GENOME])['weight'] == pytest.approx(seed / 7.0)
        assert trial.user_attrs[st.ATTR_FORMULA] == spec['formula']
        assert trial.user_attrs[st.ATTR_PARENTS] == [writer, index]
        assert trial.user_attrs[st.ATTR_GENERATION] == index // 4
        assert trial.intermediate_values == spec['intermediate']
        if spec['outcome'] == 'complete':
            assert trial.value == spec['value']
        elif spec['outcome'] == 'pruned':  # Optuna keeps the last reported value of a pruned trial
            assert trial.value == spec['intermediate'][2]
        else:
            assert trial.value is None
        assert (trial.user_attrs.get(st.ATTR_FAIL_REASON) == spec['reason']) == (spec['outcome'] == 'fail')


# --------------------------------------------------------------------------- journal file and PostgreSQL
@pytest.fixture(params=['journal', pytest.param('postgres', marks=pytest.mark.postgres)])
def storage_url(request, tmp_path):
    if request.param == 'journal':
        return resolve_storage_url(None, str(tmp_path / 'runs' / 'study'))
    return request.getfixturevalue('postgres_url')


def test_concurrent_writer_processes(storage_url):
    storage = open_storage(storage_url)
    study_name = f'concurrency-{uuid.uuid4().hex[:8]}'
    optuna.create_study(study_name=study_name, storage=storage, direction='maximize')
    context = multiprocessing.get_context('fork')
    queue = context.Queue()
    workers = [context.Process(target=_writer_process, args=(storage_url, study_name, w, queue))
               for w in range(N_WRITERS)]
    for worker in workers:
        worker.start()
    results = dict(queue.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
    failures = {w: r for w, r in results.items() if isinstance(r, str)}
    assert not failures
    seen = {seed: number for numbers in results.values() for seed, number in numbers.items()}
    # A fresh reader (new storage object) rebuilds the same study from the record.
    _check_trials(optuna.load_study(study_name=study_name, storage=open_storage(storage_url)).trials, seen)
    if storage_url.startswith('journal://'):
        assert os.path.isfile(st.journal_path(storage_url))


def test_default_storage_is_journal_file_in_run_dir(tmp_path):
    run_dir = tmp_path / 'runs' / 'mystudy'
    url = resolve_storage_url(None, str(run_dir))
    assert url == 'journal://' + str(run_dir / 'study.journal')
    storage = open_storage(None, str(run_dir))
    assert isinstance(storage, optuna.storages.JournalStorage)
    assert (run_dir / 'study.journal').is_file()
    # A plain path or file:// names a journal file too; relative paths are made absolute.
    assert resolve_storage_url('file:///x/y.journal', '.') == 'journal:///x/y.journal'
    assert resolve_storage_url('rel/s.journal', '.') == 'journal://' + os.path.abspath('rel/s.journal')
    assert resolve_storage_url('postgres://u@h/db', '.') == 'postgresql://u@h/db'


def test_journal_in_unusable_folder_is_a_storage_error(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    with pytest.raises(StorageError, match='cannot create the journal file'):
        open_storage(None, str(blocker / 'run'))


# --------------------------------------------------------------------------- masking and credentials
@pytest.mark.parametrize('url, masked', [
    ('postgresql://alice:s3cret@db:5432/search', 'postgresql://alice:***@db:5432/search'),
    ('postgresql+psycopg2://alice:p%40ss%2Fx@db/search', 'postgresql+psycopg2://alice:***@db/search'),
    ('mongodb://bob:pw@h1:27017,h2:27017/detkds?authSource=admin',
     'mongodb://bob:***@h1:27017,h2:27017/detkds?authSource=admin'),
    ('postgresql://db/search?user=a&password=hunter2&sslmode=require',
     'postgresql://db/search?user=a&password=***&sslmode=require'),
    ('mongodb://h/db?authMechanismProperties=AWS_SESSION_TOKEN:tok&sessionToken=abc',
     'mongodb://h/db?authMechanismProperties=AWS_SESSION_TOKEN:tok&sessionToken=***'),
    ('postgresql://alice:pa/ss@db/search', 'postgresql://alice:***@db/search'),  # unencoded '/' in password
    ('postgresql://alice@db/search', 'postgresql://alice@db/search'),
    ('mongodb://h/db?appName=ops@site', 'mongodb://h/db?appName=ops@site'),
    (None, ''),
])
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_redact_removes_every_form_of_the_password():
    url = 'postgresql://alice:p%40ss%2Fx@db/search?password=q1'
    text = f'failed for {url}; dsn password=p@ss/x; encoded p%40ss%2Fx; query q1'
    cleaned = redact(text, url)
    for secret in ('p@ss/x', 'p%40ss%2Fx', 'q1'):
        assert secret not in cleaned
    assert 'postgresql://alice:***@db/search?password=***' in cleaned
    assert redact('nothing secret', None) == 'nothing secret'


def test_env_password_is_inserted_only_when_the_url_has_a_user_and_no_password(monkeypatch):
    monkeypatch.setenv(st.PASSWORD_ENV, 'a:b/c@d')
    assert st.apply_env_password('postgresql://alice@db/s') == 'postgresql://alice:a%3Ab%2Fc%40d@db/s'
    assert st.apply_env_password('postgresql://alice:own@db/s') == 'postgresql://alice:own@db/s'
    assert st.apply_env_password('postgresql://db/s') == 'postgresql://db/s'
    monkeypatch.delenv(st.PASSWORD_ENV)
    assert st.apply_env_password('postgresql://alice@db/s') == 'postgresql://alice@db/s'


def _assert_masked(message: str, *secrets: str) -> None:
    assert '\n' not in message
    for secret in secrets:
        assert secret not in message and quote(secret, safe='') not in message


def test_sqlite_and_unknown_schemes_are_refused(tmp_path):
    with pytest.raises(ConfigError, match='SQLite is not supported'):
        open_storage(f'sqlite:///{tmp_path}/optuna.db')
    with pytest.raises(ConfigError, match="unknown storage scheme 'redis'") as info:
        open_storage('redis://admin:topsecret@cache:6379/0')
    _assert_masked(str(info.value), 'topsecret')
    assert not list(tmp_path.iterdir())  # nothing created


def test_closed_port_is_a_masked_storage_error():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(StorageError, match='connection refused') as info:
        open_storage(f'postgresql://alice:Wh1sper@127.0.0.1:{port}/search', timeout_s=2)
    assert time.monotonic() - start < 10
    _assert_masked(str(info.value), 'Wh1sper')
    assert 'alice:***@127.0.0.1' in str(info.value)
    assert isinstance(info.value, DetKDSError)


def test_unroutable_host_fails_within_the_timeout():
    start = time.monotonic()
    with pytest.raises(StorageError) as info:
        open_storage('postgresql://alice:Wh1sper@10.255.255.1:5432/search', timeout_s=1)
    assert time.monotonic() - start < 8
    _assert_masked(str(info.value), 'Wh1sper')


def _with_password(url: str, password: str | None) -> str:
    head, user, _, rest = st._split_credentials(url)
    return f'{head}{user}{":" + quote(password, safe="") if password is not None else ""}{rest}'


def _password_of(url: str) -> str:
    password = st._split_credentials(url)[2]
    if not password:
        pytest.skip('the PostgreSQL test URL carries no password')
    return unquote(password)


@pytest.mark.postgres
def test_wrong_password_on_real_server(postgres_url):
    real = _password_of(postgres_url)
    with pytest.raises(StorageError, match='authentication failed') as info:
        open_storage(_with_password(postgres_url, 'Wr0ng-guess'))
    _assert_masked(str(info.value), 'Wr0ng-guess', real)


@pytest.mark.postgres
def test_missing_database_on_real_server(postgres_url):
    head, rest = postgres_url.rsplit('/', 1)
    with pytest.raises(StorageError, match='database missing') as info:
        open_storage(f'{head}/no_such_db_{uuid.uuid4().hex[:6]}')
    _assert_masked(str(info.value), _password_of(postgres_url))


@pytest.mark.postgres
def test_database_without_rights_is_refused_before_any_trial(postgres_url):
    if os.environ.get('DETKDS_TEST_POSTGRES_URL'):
        pytest.skip('the rights of an external server\'s user are unknown')
    # PostgreSQL 15+ lets any user connect to `postgres` but not create tables in its public schema.
    head, _ = postgres_url.rsplit('/', 1)
    with pytest.raises(StorageError, match='not authorised: .*permission denied') as info:
        open_storage(f'{head}/postgres')
    _assert_masked(str(info.value), _password_of(postgres_url))


@pytest.mark.postgres
def test_password_from_environment(postgres_url, monkeypatch):
    real = _password_of(postgres_url)
    without = _with_password(postgres_url, None)
    monkeypatch.setenv(st.PASSWORD_ENV, real)
    storage = open_storage(without)
    optuna.create_study(study_name=f'env-{uuid.uuid4().hex[:8]}', storage=storage)
    monkeypatch.setenv(st.PASSWORD_ENV, 'Env-wr0ng')
    with pytest.raises(StorageError, match='authentication failed') as info:
        open_storage(without)
    _assert_masked(str(info.value), 'Env-wr0ng', real)


# --------------------------------------------------------------------------- MongoDB journal backend
class _AtomicCollection:
    """A mongomock collection whose every operation runs under one lock, as single operations do on a server."""

    def __init__(self, collection, lock):
        self._collection, self._lock = collection, lock

    def __getattr__(self, name):
        method = getattr(self._collection, name)

        def atomic(*args, **kwargs):
            with self._lock:
                result = method(*args, **kwargs)
                return list(result) if name == 'find' else result
        return atomic


class _AtomicMongoClient:
    def __init__(self):
        import mongomock
        self._client, self._lock = mongomock.MongoClient(), threading.RLock()

    def __getitem__(self, database):
        client = self

        class _Database:
            def __getitem__(self, name):
                return _AtomicCollection(client._client[database][name], client._lock)

            def command(self, *args, **kwargs):
                return client._client[database].command(*args, **kwargs)
        return _Database()


@pytest.fixture(params=['mongomock', 'real-server'])
def mongo(request):
    """A factory of backends sharing one journal: mongomock, or a real server from DETKDS_TEST_MONGO_URL."""
    namespace = f'test_{uuid.uuid4().hex[:8]}'
    if request.param == 'mongomock':
        pytest.importorskip('mongomock')
        client = _AtomicMongoClient()
        yield lambda **kw: MongoJournalBackend('mongodb://localhost/detkds_test', namespace=namespace,
                                               client=client, **kw)
        return
    url = os.environ.get('DETKDS_TEST_MONGO_URL')
    if not url:
        pytest.skip('DETKDS_TEST_MONGO_URL not set (no MongoDB server installable here)')
    made = []

    def factory(**kw):
        made.append(MongoJournalBackend(url, namespace=namespace, **kw))
        made[-1].check()
        return made[-1]
    yield factory
    if made:
        made[0]._logs.drop()
        made[0]._meta.drop()


def _log(i: int) -> dict:
    return {'op_code': 2, 'worker_id': 'test', 'study_id': -1, 'user_attr': {'i': i}}


def _drain(backend, start=0):
    return list(backend.read_logs(start))


def test_mongo_reader_waits_for_a_reserved_number_and_never_skips_it(mongo):
    backend = mongo(gap_timeout_s=30)
    backend.append_logs([_log(0)])
    reserved = backend._reserve(1)          # a concurrent writer between its $inc and its insert
    backend.append_logs([_log(2)])
    assert reserved == 1
    got, done = [], threading.Event()

    def read():
        got.extend(mongo(gap_timeout_s=30).read_logs(0))
        done.set()
    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.4)
    assert not done.is_set() and got == [_log(0)]   # stopped at the gap, did not jump to number 2
    assert backend._insert({'_id': reserved, 'log': json.dumps(_log(1)), 'token': 'late-writer'})
    reader.join(timeout=10)
    assert got == [_log(0), _log(1), _log(2)]
    assert _drain(backend, 2) == [_log(2)]


def test_mongo_gap_of_a_dead_writer_becomes_a_noop_and_the_late_writer_loses(mongo):
    backend = mongo(gap_timeout_s=0.3)
    backend.append_logs([_log(0)])
    dead = backend._reserve(1)               # this writer crashed after reserving
    backend.append_logs([_log(2)])
    start = time.monotonic()
    assert _drain(backend) == [_log(0), MongoJournalBackend.TOMBSTONE_LOG, _log(2)]
    assert 0.3 <= time.monotonic() - start < 5
    # Had it only been slow, its insert now fails, so no reader can ever see two versions of number 1.
    assert not backend._insert({'_id': dead, 'log': json.dumps(_log(1)), 'token': 'zombie'})
    assert _drain(mongo()) == [_log(0), MongoJournalBackend.TOMBSTONE_LOG, _log(2)]


class _StalledWriter(MongoJournalBackend):
    """A writer that a reader declares dead once, between its reservation and its inserts."""

    stalled_offset = 0

    def _reserve(self, count):
        first = super()._reserve(count)
        if self.stalled_offset is not None:
            self._tombstone(first + self.stalled_offset)  # what a reader does after gap_timeout_s
            self.stalled_offset = None
        return first


@pytest.mark.parametrize('stalled_offset', [0, 1])
def test_mongo_writer_declared_dead_reappends_in_order(mongo, stalled_offset):
    backend = mongo()
    writer = _StalledWriter(backend._url, namespace=backend._namespace, client=backend._injected_client) \
        if backend._injected_client is not None else _StalledWriter(backend._url, namespace=backend._namespace)
    writer.stalled_offset = stalled_offset
    writer.append_logs([_log(10), _log(11), _log(12)])
    logs = _drain(backend)
    tomb = MongoJournalBackend.TOMBSTONE_LOG
    if stalled_offset == 0:      # lost its first number: all three re-appended after the reserved block
        assert logs == [tomb, tomb, tomb, _log(10), _log(11), _log(12)]
    else:                        # kept number 0, lost 1, released 2 itself: readers never wait on it
        assert logs == [_log(10), tomb, tomb, _log(11), _log(12)]
    # JournalStorage replays tombstones as no-ops.
    storage = optuna.storages.JournalStorage(mongo())
    assert storage.get_all_studies() == []


def test_mongo_eight_concurrent_writers(mongo):
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # many more thread switches, so reserve/insert/read really interleave
    try:
        study_name = 'concurrent'
        optuna.create_study(study_name=study_name, storage=optuna.storages.JournalStorage(mongo()),
                            direction='maximize')
        results, errors = {}, []

        def writer(index):
            try:  # each writer has its own JournalStorage (own replay), as separate processes would
                storage = optuna.storages.JournalStorage(mongo(gap_timeout_s=30))
                results[index] = _write_trials(storage, study_name, index)
            except BaseException as exc:
                errors.append(exc)
        threads = [threading.Thread(target=writer, args=(i,)) for i in range(N_WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        sys.setswitchinterval(switch)
    assert not errors
    seen = {seed: number for numbers in results.values() for seed, number in numbers.items()}
    reader = mongo()
    _check_trials(optuna.load_study(study_name=study_name, storage=optuna.storages.JournalStorage(reader)).trials,
                  seen)
    # The log itself: numbers 0..N-1, each exactly once, no tombstones (nobody died).
    numbers = [doc['_id'] for doc in reader._logs.find({}, sort=[('_id', 1)])]
    assert numbers == list(range(reader._meta.find_one({'_id': 'log_counter'})['reserved']))
    assert not any(log == MongoJournalBackend.TOMBSTONE_LOG for log in _drain(reader))


def test_mongo_backend_pickles_without_a_client_and_never_shows_the_password():
    backend = MongoJournalBackend('mongodb://ops:Sup3rs3cret@db1,db2/search?replicaSet=rs0')
    assert backend._database == 'search'
    assert 'Sup3rs3cret' not in repr(backend)
    clone = pickle.loads(pickle.dumps(backend))
    assert clone._client is None and clone._url == backend._url
    assert st._mongo_database_of('mongodb+srv://cluster.example.net') == st.DEFAULT_MONGO_DATABASE


def test_unreachable_mongo_is_a_masked_storage_error():
    pytest.importorskip('pymongo')
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(StorageError, match='no server answered within 1 s') as info:
        open_storage(f'mongodb://ops:Sup3rs3cret@127.0.0.1:{port}/search', timeout_s=1)
    assert time.monotonic() - start < 8
    _assert_masked(str(info.value), 'Sup3rs3cret')


# --------------------------------------------------------------------------- optuna-dashboard reads it
def _wsgi_get(app, path: str) -> dict:
    from wsgiref.util import setup_testing_defaults
    environ = {'PATH_INFO': path, 'REQUEST_METHOD': 'GET', 'QUERY_STRING': ''}
    setup_testing_defaults(environ)
    status = []
    body = b''.join(app(environ, lambda s, headers, exc_info=None: status.append(s) or io.BytesIO().write))
    assert status and status[0].startswith('200'), (status, body[:300])
    return json.loads(body)


@pytest.mark.parametrize('kind', ['journal', 'mongomock'])
def test_dashboard_reads_the_study(kind, tmp_path):
    optuna_dashboard = pytest.importorskip('optuna_dashboard')
    if kind == 'journal':
        storage = open_storage(None, str(tmp_path / 'run'))
    else:
        pytest.importorskip('mongomock')
        backend = MongoJournalBackend('mongodb://localhost/dash', client=_AtomicMongoClient())
        storage = optuna.storages.JournalStorage(backend)
    study = optuna.create_study(study_name='dash', storage=storage, direction='maximize')
    for index in range(3):
        trial = study.ask()
        trial.set_user_attr(st.ATTR_FORMULA, f'f{index}')
        trial.report(0.1 * index, 0)
        study.tell(trial, 0.25 * index)
    app = optuna_dashboard.wsgi(storage)
    studies = _wsgi_get(app, '/api/studies')['study_summaries']
    assert [s['study_name'] for s in studies] == ['dash']
    detail = _wsgi_get(app, f"/api/studies/{studies[0]['study_id']}")
    assert [t['number'] for t in detail['trials']] == [0, 1, 2]
    assert [t['values'] for t in detail['trials']] == [[0.0], [0.25], [0.5]]
    assert [t['user_attrs'] for t in detail['trials']] == [
        [{'key': st.ATTR_FORMULA, 'value': f'f{i}'}] for i in range(3)]
    assert detail['best_trials'][0]['number'] == 2
