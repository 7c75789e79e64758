"""Shared pytest fixtures. Sections are delimited by owner area; keep each self-contained."""
import os
import shutil
import tempfile

import pytest

# --------------------------------------------------------------------------- pretrained demo backbones
# The demo configs initialise their backbones from checkpoints under $DETKDS_DEMO_BACKBONES (default
# work_dirs/demo/backbones). Tests get their own folder, set before any config is read (configs substitute the
# variable when loaded, in this process and in every process a test starts), filled once per session by a few
# iterations of the real pretraining: the tests need loadable weights of the right shapes, not good ones.
DEMO_BACKBONES = tempfile.mkdtemp(prefix='detkds-test-backbones-')
os.environ['DETKDS_DEMO_BACKBONES'] = DEMO_BACKBONES


@pytest.fixture(scope='session', autouse=True)
def demo_backbones(shapes_root):
    from workers.backbone_pretrain import pretrain_backbone
    from workers.prepare import backbone_checkpoint
    from workers.settings import PretrainSettings
    from .demo_utils import demo_config_path
    settings = PretrainSettings(iterations=2, batch_size=8, val_crops=8)
    for config in ('retinanet_teacher', 'retinanet_student'):   # one per width: every demo pair shares them
        path = demo_config_path(config)
        pretrain_backbone(path, shapes_root, backbone_checkpoint(path, '.'), settings, log=lambda line: None)
    yield DEMO_BACKBONES
    shutil.rmtree(DEMO_BACKBONES, ignore_errors=True)

# --------------------------------------------------------------------------- demo data
@pytest.fixture(scope='session')
def shapes_root(tmp_path_factory):
    """A small generated shapes dataset (COCO format) shared by the tests of a session."""
    from distill_core.shapes import generate_shapes
    root = tmp_path_factory.mktemp('data') / 'shapes'
    generate_shapes(str(root), num_train=24, num_val=8, size=128, seed=0)
    return str(root)


# --------------------------------------------------------------------------- demo teachers
@pytest.fixture(scope='session')
def demo_teacher_checkpoint(tmp_path_factory):
    """``get(name)``: a randomly initialised demo teacher saved as a checkpoint (tests/demo_utils.py
    ``build_teacher_checkpoint``), ``name`` a family (``faster_rcnn``) or a teacher config
    (``configs/demo/cascade_rcnn_teacher.py``); each one built once per session, on first use."""
    import os.path as osp
    from .demo_utils import build_teacher_checkpoint
    folder = tmp_path_factory.mktemp('demo_teachers')

    def get(name):
        config = osp.splitext(osp.basename(name))[0]
        family = config[:-len('_teacher')] if config.endswith('_teacher') else config
        return build_teacher_checkpoint(family, folder, config=f'{family}_teacher')
    return get


# --------------------------------------------------------------------------- storage: private PostgreSQL server
# Owner: search/storage.py tests. `postgres_url` is a URL with user and password for a throw-away database.
# DETKDS_TEST_POSTGRES_URL points the tests at an existing server instead. Otherwise a private server is
# started for the session: initdb into a temp dir, TCP on 127.0.0.1 at a free port (scram password auth), unix
# socket in the temp dir (trust, used only for setup), run as the `postgres` system user when we are root
# (PostgreSQL refuses to run as root), and stopped with `pg_ctl stop -m fast` at session end whatever happens.
# No binaries: a failure under CI (scripts/ci_system_deps.sh installs the Debian package), a skip locally.
# The server itself is tests/pg_server.py (shared with benchmarks/controller.py).
@pytest.fixture(scope='session')
def postgres_url():
    external = os.environ.get('DETKDS_TEST_POSTGRES_URL')
    if external:
        yield external
        return
    from .pg_server import NoServerUser, PrivatePostgres, postgres_bin_dir
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        message = 'PostgreSQL binaries (initdb) not found; install the Debian package postgresql'
        if os.environ.get('CI'):
            pytest.fail(message + ' (scripts/ci_system_deps.sh does this in CI)')
        pytest.skip(message)
    try:
        server = PrivatePostgres(bin_dir)
    except NoServerUser as exc:
        pytest.fail(f'{exc} (the test server)')
    try:
        yield server.url
    finally:
        server.stop()
# --------------------------------------------------------------------------- end storage section


# --------------------------------------------------------------------------- a finished tiny search
@pytest.fixture(scope='session')
def tiny_search(tmp_path_factory, shapes_root):
    """Run one real tiny search on local Ray (demo RetinaNet pair, tiny proxies) and share the finished study.

    Returns dict(cwd, study, config, returncode, stdout, stderr); the study's journal is
    ``<cwd>/runs/<study>/study.journal``. Every process the launch started is killed afterwards.
    """
    import signal
    import subprocess
    import sys
    from .test_search_launch import write_search_config
    cwd = tmp_path_factory.mktemp('tiny_search')
    config = write_search_config(cwd, shapes_root)
    proc = subprocess.Popen([sys.executable, '-m', 'search.cli', 'launch', config, '--study', 'tiny'], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=1200)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return dict(cwd=str(cwd), study='tiny', config=config, returncode=proc.returncode, stdout=out, stderr=err)


# --------------------------------------------------------------------------- results of the tiny search
# Owner: export / dashboard / report tests. A copy of the finished tiny search's study (journal file) in its own
# folder, with two baselines (student alone, PKD) evaluated under the same proxy: tests that write into a study
# (baselines, dashboard notes) must not change the shared `tiny_search` study other tests check.
@pytest.fixture(scope='session')
def tiny_results(tmp_path_factory, tiny_search):
    import shutil
    import subprocess
    import sys
    assert tiny_search['returncode'] == 0, tiny_search['stderr'][-4000:]
    cwd = tmp_path_factory.mktemp('tiny_results')
    study = tiny_search['study']
    os.makedirs(cwd / 'runs' / study)
    shutil.copyfile(os.path.join(tiny_search['cwd'], 'runs', study, 'study.journal'),
                    cwd / 'runs' / study / 'study.journal')
    os.symlink(os.path.join(tiny_search['cwd'], 'data'), cwd / 'data')
    result = subprocess.run([sys.executable, '-m', 'search.cli', 'baselines', tiny_search['config'], '--study', study,
                             '--names', 'none', 'pkd', '--json'], cwd=cwd, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    import json
    return dict(cwd=str(cwd), study=study, config=tiny_search['config'], search_cwd=tiny_search['cwd'],
                baselines=json.loads(result.stdout))
# --------------------------------------------------------------------------- end results section


@pytest.fixture
def searcher_setup(tmp_path):
    """(study on a journal file, the default space, a one-generation evolution of 3 'global' genomes): what the
    searcher tests drive by hand."""
    import optuna

    from search.evolution import Evolution, StagePlan
    from search.operators import build_ops
    from search.space import Space
    from search.study import open_study
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / 'j')))
    study = open_study(storage, 'g')
    space = Space.default()
    stage1, stage2 = build_ops(space, ['global'])
    evolution = Evolution(StagePlan(stage1_inputs=('global',), population_size=3, generations=1,
                                    stage2_generations=0, reeval_top_k=0), stage1, stage2)
    return study, space, evolution
