"""Running on a cluster: the compose file validates, and on a real two-node Ray cluster (head + worker started
with `ray start` on loopback, token auth on) the search completes, survives losing the worker node in the middle
of a trial (Ray Tune retries that trial on the head; the study keeps one record of it) and survives its
controller being killed and relaunched against the same cluster."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import yaml
from optuna.trial import TrialState

from .cluster_utils import LocalRayCluster
from .demo_utils import ROOT
from .test_search_launch import check_complete_study, cli, finish, kill_group, load, write_search_config


# --------------------------------------------------------------------------- docker-compose.yml
def compose_command():
    """`docker compose` when the plugin exists, else Debian's `docker-compose` (1.29); validation needs no engine."""
    if shutil.which('docker') and subprocess.run(['docker', 'compose', 'version'], capture_output=True).returncode == 0:
        return ['docker', 'compose']
    if shutil.which('docker-compose'):
        return ['docker-compose']
    message = 'no compose command: install the Debian package docker-compose (scripts/ci_system_deps.sh)'
    if os.environ.get('CI'):
        pytest.fail(message)
    pytest.skip(message)


def compose_config(compose_file, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(('DETKDS_', 'COMPOSE_'))}
    return subprocess.run(compose_command() + ['-f', str(compose_file), *args, 'config'], capture_output=True,
                          text=True, timeout=60, env=env, cwd=ROOT)


def test_compose_file_validates_and_wires_the_cluster():
    result = compose_config(os.path.join(ROOT, 'docker-compose.yml'), '--profile', 'postgres')
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)['services']
    assert set(services) == {'head', 'worker', 'mongo', 'postgres', 'dashboard'}
    head, worker = services['head'], services['worker']
    assert head['command'][-1] == 'head' and worker['command'][-1] == 'worker'
    assert any(str(p['target'] if isinstance(p, dict) else p).endswith('8265') for p in head['ports'])
    assert services['postgres']['profiles'] == ['postgres'] and 'profiles' not in services['mongo']
    # the default storage is MongoDB, reached only by the controller and the dashboard
    assert head['environment']['DETKDS_STORAGE'].startswith('mongodb://detkds@mongo:27017/')
    assert 'DETKDS_STORAGE' not in worker.get('environment', {})
    # GPUs reserved through the compose device syntax
    devices = worker['deploy']['resources']['reservations']['devices']
    assert devices[0]['driver'] == 'nvidia' and devices[0]['capabilities'] == ['gpu']
    # data and checkpoints read-only, at the same paths on the head and on every worker
    inputs = lambda service: sorted(m for m in mounts(service) if m[1].startswith(INPUT_PATHS))
    assert inputs(head) == inputs(worker) and len(inputs(worker)) == 3
    assert all(read_only for _, _, read_only in inputs(worker))
    # storage services: a named volume and a health check each; the same token secret for every Ray process
    for name, path in (('mongo', '/data/db'), ('postgres', '/var/lib/postgresql/data')):
        assert services[name]['healthcheck']['test']
        assert [(source, read_only) for source, target, read_only in mounts(services[name]) if target == path] \
            == [(f'{name}-data', False)]
    for service in (head, worker):
        assert 'ray_auth_token' in [s['source'] if isinstance(s, dict) else s for s in service['secrets']]


INPUT_PATHS = ('/opt/detkds-search/data', '/opt/detkds-search/checkpoints', '/opt/detkds-search/work_dirs')


def mounts(service):
    """(source, target, read_only) of each volume, from compose v1's short or compose v2's long syntax."""
    result = []
    for volume in service.get('volumes', []):
        if isinstance(volume, dict):
            result.append((volume['source'], volume['target'], bool(volume.get('read_only'))))
        else:
            source, target, *mode = volume.split(':')
            result.append((source, target, mode == ['ro']))
    return result


def test_compose_validation_rejects_a_broken_file(tmp_path):
    broken = tmp_path / 'docker-compose.yml'
    text = open(os.path.join(ROOT, 'docker-compose.yml')).read()
    broken.write_text(text.replace('    shm_size: 8gb\n', '    shm_size: 8gb\n    gpus_per_node: 1\n', 1))
    result = compose_config(broken)
    assert result.returncode != 0 and 'gpus_per_node' in result.stderr


# --------------------------------------------------------------------------- a two-node Ray cluster
SMALL_PLAN = dict(stage1_inputs=['global'])   # at most 7 trials: stage 1 on one input, then stage 2
@pytest.fixture(scope='module')
def cluster():
    """Head (1 CPU) + one worker node (1 CPU) on 127.0.0.1: each node runs one tiny trial at a time."""
    with LocalRayCluster() as ray_cluster:
        ray_cluster.start_head(num_cpus=1)
        ray_cluster.ensure_worker(num_cpus=1)
        yield ray_cluster
        ray_cluster.shutdown()
        left = ray_cluster.leftover_pids()
    assert not left, f'Ray processes of the test cluster still running: {left}'


def wait_until(predicate, timeout, proc=None, what=''):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f'the launch ended before {what}: {proc.stderr.read()[-3000:]}')
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f'timed out waiting for {what}')


@pytest.mark.slow
def test_search_on_two_nodes_survives_losing_the_worker_node(cluster, tmp_path, shapes_root):
    worker = cluster.ensure_worker()
    worker_id = cluster.node_id(worker)
    config = write_search_config(tmp_path, shapes_root, **SMALL_PLAN)
    proc = cli(['launch', config, '--study', 's', '--ray-address', cluster.address], cwd=tmp_path, env=cluster.env)
    seen = set()

    def trial_running_on_worker_for_a_second():
        for name in ('head', worker):
            if cluster.busy_workers(name):
                seen.add(name)
        if seen == {'head', worker} and cluster.busy_workers(worker):
            since = trial_running_on_worker_for_a_second.since = getattr(
                trial_running_on_worker_for_a_second, 'since', None) or time.time()
            return time.time() - since >= 1.0
        trial_running_on_worker_for_a_second.since = None
        return False

    try:
        # both nodes run trials; once a trial has run on the worker for a second, the worker machine vanishes
        wait_until(trial_running_on_worker_for_a_second, 300, proc, 'a trial on each node')
        cluster.kill_node(worker)
        running_at_kill = {t.number for t in load(tmp_path, 's').get_trials(deepcopy=False)
                           if t.state == TrialState.RUNNING}
        rc, out, err = finish(proc, timeout=600)
    finally:
        kill_group(proc)
    assert rc == 0, err[-4000:]
    assert '[search] finished' in out
    study = load(tmp_path, 's')
    real = check_complete_study(study)          # nothing RUNNING, numbers 0..N-1, no (genome, seed) twice
    retried = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get('ray_retries')]
    assert len(retried) == 1, [t.user_attrs.get('ray_retries') for t in retried]
    trial = retried[0]
    # the same Optuna trial, re-run by Ray Tune on the head, finished as a normal evaluation
    assert trial.state in (TrialState.COMPLETE, TrialState.PRUNED), trial.user_attrs
    assert not trial.user_attrs.get('interrupted') and not trial.user_attrs.get('fail_reason')
    assert trial.number in running_at_kill
    # Ray words the loss two ways, depending on which it notices first: the actor's connection dropping, or the
    # GCS declaring the node dead (that message names the node)
    reasons = trial.user_attrs['ray_retries']
    assert len(reasons) == 1 and reasons[0].startswith('attempt 1: '), reasons
    assert ('node has died' in reasons[0] and worker_id in reasons[0]) or 'is unavailable' in reasons[0], reasons
    curve_iterations = [row['iteration'] for row in json.loads(trial.user_attrs['curve'])]
    assert curve_iterations == sorted(set(curve_iterations)), 'the lost attempt left its reports in the curve'
    crashed = [t for t in real if t.state == TrialState.FAIL
               and not t.user_attrs.get('fail_reason', '').startswith('rejected:')]   # a degenerate loss is a result
    assert not crashed, 'a trial failed instead of being retried'
    # the evolution was told each trial exactly once (a reused proposal is answered from a record, not told)
    assert json.loads(study.user_attrs['progress'])['counts']['told'] == len(real)


@pytest.mark.slow
def test_controller_killed_and_relaunched_against_the_cluster(cluster, tmp_path, shapes_root):
    worker = cluster.ensure_worker()            # a fresh worker node if the previous test killed the last one
    config = write_search_config(tmp_path, shapes_root, **SMALL_PLAN)
    args = ['launch', config, '--study', 's', '--ray-address', cluster.address]
    proc = cli(args, cwd=tmp_path, env=cluster.env)
    def two_finished_and_one_running():
        try:
            done = [t for t in load(tmp_path).get_trials(deepcopy=False) if t.state.is_finished()]
        except (FileNotFoundError, KeyError):    # no run folder yet, or no study in the journal yet
            return False
        return len(done) >= 2 and (cluster.busy_workers('head') or cluster.busy_workers(worker))

    try:
        wait_until(two_finished_and_one_running, 300, proc, 'two finished trials')
        os.kill(proc.pid, signal.SIGKILL)       # the controller (Ray driver) only; the cluster stays up
        proc.wait(timeout=60)
    finally:
        kill_group(proc)
    # Ray ends the dead driver's trial actors itself (their owner is gone)
    wait_until(lambda: not cluster.busy_workers('head') and not cluster.busy_workers(worker), 60,
               what="the killed controller's trials to stop")
    before = load(tmp_path).get_trials(deepcopy=False)
    finished_before = {t.number: t.state for t in before if t.state.is_finished()}
    assert any(t.state == TrialState.RUNNING for t in before)
    rc, out, err = finish(cli(args, cwd=tmp_path, env=cluster.env), timeout=600)
    assert rc == 0, err[-4000:]
    assert 'resuming study' in out and '[search] finished' in out
    study = load(tmp_path)
    real = check_complete_study(study)
    for number, state in finished_before.items():   # finished trials are never re-run or rewritten
        assert study.trials[number].state == state
    interrupted = [t for t in study.trials if t.user_attrs.get('interrupted')]
    assert interrupted and all(t.state == TrialState.FAIL for t in interrupted)
    assert json.loads(study.user_attrs['progress'])['counts']['told'] == len(real)
    assert len(cluster.wait_for_nodes(2)) == 2         # both nodes outlived their controller


def test_relaunch_skips_a_trial_its_killed_controller_was_still_creating(tmp_path):
    """SIGKILL can land between Optuna's ask() and the last of the trial's attributes (seen on the cluster test):
    the relaunch closes that trial as interrupted and replays the study without it."""
    import optuna
    from search.study import close_stale_trials, open_study, replay_records
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / 'j')))
    study = open_study(storage, 'k')
    done = study.ask()
    for name, value in dict(key='aaa', seed=0, stage=1, input='global', generation=0, genome=None).items():
        done.set_user_attr(name, value)
    study.tell(done, 0.25)
    half = study.ask()
    half.set_user_attr('key', 'bbb')           # killed here: no seed, stage, ... and still RUNNING
    assert close_stale_trials(study, 'interrupted') == 1
    records = replay_records(study)
    assert [(r.key, r.seed, r.value, r.interrupted) for r in records] == [('aaa', 0, 0.25, False)]
    assert study.trials[half.number].state == optuna.trial.TrialState.FAIL
