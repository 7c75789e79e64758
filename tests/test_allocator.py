"""workers/allocator.py: the glibc settings take effect (freed step memory stays in the heap, so the next step
faults no new pages) and step aside when the user chose their own."""
import json
import os
import platform
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
                                reason='mallopt settings are glibc-specific')

# A training step in miniature: a working set of 1 MiB blocks allocated, then all freed; minor page faults of
# the rounds after the first.
STEPS = r'''
import ctypes, json, resource, sys
sys.path.insert(0, sys.argv[1])
from workers.allocator import tune_cpu_allocator
tuned = tune_cpu_allocator()
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
faults = []
for round in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [libc.malloc(1 << 20) for _ in range(48)]
    for block in blocks:
        ctypes.memset(block, 1, 1 << 20)   # touch every page, as a tensor's first write does
    for block in blocks:
        libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({'tuned': tuned, 'faults': faults[1:]}))
'''


def run_steps(**env):
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(('MALLOC_', 'GLIBC_TUNABLES'))}
    child_env.update(env)
    out = subprocess.run([sys.executable, '-c', STEPS, ROOT], env=child_env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def test_tuned_steps_reuse_freed_memory():
    default = run_steps(DETKDS_MALLOC_TUNING='0')
    tuned = run_steps()
    assert default['tuned'] is False and tuned['tuned'] is True
    pages = 48 * (1 << 20) // os.sysconf('SC_PAGE_SIZE')
    # glibc's defaults map (or give back) the working set every round: about one fault per page
    assert min(default['faults']) > pages // 2
    # tuned, the freed blocks are reused from the heap
    assert max(tuned['faults']) < pages // 20


def test_user_malloc_settings_are_left_alone():
    assert run_steps(MALLOC_TRIM_THRESHOLD_='131072')['tuned'] is False
    assert run_steps(GLIBC_TUNABLES='glibc.malloc.trim_threshold=131072')['tuned'] is False
