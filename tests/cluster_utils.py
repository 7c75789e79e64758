"""A real multi-node Ray cluster on loopback for tests: `ray start --block` per node, every process accounted for.

Each node is one `ray start --block` process started in its own session (process group); Ray's daemons for the
node (GCS, raylet, agents, log monitor) and the worker processes the raylet spawns stay in that group. Killing a
node is SIGKILL to its group (a machine that disappears), and `shutdown` kills every group, then any process
whose command line still names this cluster's private temp dir (by PID, never by a broad name). `ray stop` is
never used: it stops every Ray process of the machine, including other users' clusters.

Token authentication is on for every node and for the drivers (`env`): one random token in a file of the temp
dir named by RAY_AUTH_TOKEN_PATH (as docker-compose.yml does with its secret), so ~/.ray is neither read nor
written. Node death is detected in about 2 s (faster health checks than Ray's default).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

RAY = os.path.join(os.path.dirname(sys.executable), 'ray')
LOOPBACK = '127.0.0.1'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _cmdline(pid: int) -> str:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return ''


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        with open(f'/proc/{pid}/environ', 'rb') as f:
            return needle in f.read()
    except OSError:
        return False


def _ppid(pid: int) -> Optional[int]:
    try:
        with open(f'/proc/{pid}/stat') as f:
            return int(f.read().rsplit(')', 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _state(pid: int) -> Optional[str]:
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _pgid(pid: int) -> Optional[int]:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _pids() -> List[int]:
    return [int(p) for p in os.listdir('/proc') if p.isdigit()]


class LocalRayCluster:
    """Head + worker nodes on 127.0.0.1 with a private temp dir; use as a context manager."""

    def __init__(self, health_check_ms: int = 500):
        # Short path: Ray's unix sockets live under it and are limited to ~107 characters.
        self.temp_dir = tempfile.mkdtemp(prefix='detkds-ray-', dir='/tmp')
        self.port = free_port()
        self.address = f'{LOOPBACK}:{self.port}'
        self.nodes: Dict[str, subprocess.Popen] = {}
        self.killed: set = set()
        self.token_path = os.path.join(self.temp_dir, 'auth_token')
        with open(os.open(self.token_path, os.O_WRONLY | os.O_CREAT, 0o600), 'w') as f:
            f.write(secrets.token_hex(32))
        self.env = dict(os.environ, RAY_AUTH_MODE='token', RAY_AUTH_TOKEN_PATH=self.token_path,
                        RAY_USAGE_STATS_ENABLED='0',
                        # a lost node is declared dead after ~3 health checks instead of Ray's ~30 s
                        RAY_health_check_initial_delay_ms='0', RAY_health_check_period_ms=str(health_check_ms),
                        RAY_health_check_timeout_ms=str(health_check_ms),
                        RAY_health_check_failure_threshold='3')
        for key in ('RAY_ADDRESS', 'RAY_AUTH_TOKEN'):
            self.env.pop(key, None)

    # ------------------------------------------------------------------ nodes
    def _start(self, name: str, args: List[str], num_cpus: int, resources: Optional[Dict[str, float]]) -> None:
        cmd = [RAY, 'start', '--block', f'--node-ip-address={LOOPBACK}', f'--num-cpus={num_cpus}',
               '--num-gpus=0', f'--temp-dir={self.temp_dir}', '--disable-usage-stats',
               f'--dashboard-agent-listen-port={free_port()}', f'--metrics-export-port={free_port()}',
               f'--runtime-env-agent-port={free_port()}', '--object-store-memory=80000000']
        if resources:
            cmd.append('--resources=' + json.dumps(resources))
        log = open(os.path.join(self.temp_dir, f'{name}.log'), 'w')
        self.nodes[name] = subprocess.Popen(cmd + args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=self.temp_dir)
        log.close()

    def start_head(self, num_cpus: int = 1, resources: Optional[Dict[str, float]] = None) -> None:
        self._start('head', ['--head', f'--port={self.port}', '--include-dashboard=false'], num_cpus, resources)
        deadline = time.time() + 60
        while time.time() < deadline:
            self._check_alive('head')
            try:
                socket.create_connection((LOOPBACK, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError('the Ray head did not open its GCS port: ' + self.log('head')[-3000:])

    def add_worker(self, name: str, num_cpus: int = 1, resources: Optional[Dict[str, float]] = None) -> None:
        self._start(name, [f'--address={self.address}'], num_cpus, resources)

    def ensure_worker(self, num_cpus: int = 1) -> str:
        """A live worker node besides the head (a fresh one when the last was killed); returns its name."""
        alive = [name for name in self.nodes if name != 'head' and name not in self.killed]
        if alive:
            return alive[-1]
        name = f'worker{len(self.nodes)}'
        self.add_worker(name, num_cpus=num_cpus)
        self.wait_for_nodes(2)
        return name

    def node_id(self, name: str) -> str:
        """Ray's node id of a running node (read from its raylet's command line)."""
        for pid in self.node_pids(name):
            for arg in _cmdline(pid).split():
                if arg.startswith('--node_id='):
                    return arg.split('=', 1)[1]
        raise RuntimeError(f'no raylet found for node {name}')

    def _check_alive(self, name: str) -> None:
        if self.nodes[name].poll() is not None:
            raise RuntimeError(f'Ray node {name} exited ({self.nodes[name].returncode}): '
                               + self.log(name)[-3000:])

    def log(self, name: str) -> str:
        try:
            with open(os.path.join(self.temp_dir, f'{name}.log')) as f:
                return f.read()
        except OSError:
            return ''

    def alive_nodes(self, timeout: float = 60) -> List[Dict]:
        """The cluster's alive nodes as seen by a driver (also proves a driver with the token can join)."""
        script = ('import json, ray; ray.init(address=%r, logging_level="ERROR", log_to_driver=False); '
                  'print(json.dumps([dict(id=n["NodeID"], resources=n["Resources"]) for n in ray.nodes() '
                  'if n["Alive"]]))' % self.address)
        out = subprocess.run([sys.executable, '-c', script], env=self.env, capture_output=True, text=True,
                             timeout=timeout, cwd=self.temp_dir)
        if out.returncode != 0:
            raise RuntimeError('driver could not join the cluster: ' + out.stderr[-3000:])
        return json.loads(out.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, count: int, timeout: float = 90) -> List[Dict]:
        deadline = time.time() + timeout
        while True:
            for name in self.nodes:
                if name not in self.killed:
                    self._check_alive(name)
            nodes = self.alive_nodes()
            if len(nodes) == count or time.time() > deadline:
                if len(nodes) != count:
                    raise RuntimeError(f'expected {count} alive Ray nodes, found {len(nodes)}')
                return nodes
            time.sleep(1)

    def node_pids(self, name: str) -> List[int]:
        """The node's daemons (its process group) and the worker processes its raylet spawned."""
        group = self.nodes[name].pid
        daemons = [pid for pid in _pids() if _pgid(pid) == group]
        raylets = {pid for pid in daemons if '/raylet/raylet ' in _cmdline(pid)}
        return daemons + [pid for pid in _pids() if _ppid(pid) in raylets and pid not in daemons]

    def busy_workers(self, name: str) -> List[str]:
        """Process titles of the node's Ray workers that run a task or an actor (trials: ImplicitFunc.train)."""
        titles = [_cmdline(pid).strip() for pid in self.node_pids(name)]
        return [t for t in titles if t.startswith('ray::') and not t.startswith('ray::IDLE')
                and not t.endswith('Agent')]

    def kill_node(self, name: str) -> None:
        """SIGKILL every process of the node, as if its machine had vanished."""
        self.killed.add(name)
        for pid in self.node_pids(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.nodes[name].wait(timeout=30)

    # ------------------------------------------------------------------ teardown
    def shutdown(self) -> None:
        for name, proc in self.nodes.items():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        # Ray's workers leave their node's group; every process of this cluster names its token file.
        for _ in range(3):
            strays = self.leftover_pids()
            if not strays:
                break
            for pid in strays:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def leftover_pids(self) -> List[int]:
        """Processes of this cluster still alive (drivers started with ``env`` included)."""
        token = f'RAY_AUTH_TOKEN_PATH={self.token_path}\0'.encode()
        pgids = {proc.pid for proc in self.nodes.values()}
        return [pid for pid in _pids() if pid != os.getpid() and _state(pid) not in ('Z', None)
                and (_pgid(pid) in pgids or _environ_has(pid, token))]

    def __enter__(self) -> 'LocalRayCluster':
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
