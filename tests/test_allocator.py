"""pipeline.allocator: freed heap memory stays in the process, so evaluation passes stop
page-faulting their per-chunk buffers in anew."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from statistics import median

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)

# Evaluation passes (argv[2]) of a DiffRec (ML-1M's width and item count, 2,048 random users,
# T = 5); prints what the two calls returned, then the minor page faults of each pass (a JSON list).
PASSES = """
import json, resource, sys, numpy as np, scipy.sparse as sp, torch
from pipeline.allocator import keep_freed_memory
from pipeline.data.dataset import InteractionData, dense_rows
from pipeline.evaluation.evaluator import Evaluator
from pipeline.models.diffrec import DiffRec, DiffRecConfig
print(*([keep_freed_memory(), keep_freed_memory()] if sys.argv[1] == "set" else [None, None]))
torch.set_num_threads(2)
torch.manual_seed(0)
rng = np.random.default_rng(0)
n_users, n_items = 2048, 3706
def csr(p):
    return sp.random(n_users, n_items, density=p, format="csr", random_state=rng, dtype=np.float32).astype(bool).astype(np.float32)
train, valid, test = csr(0.02), csr(0.003), csr(0.003)
data = InteractionData(n_users, n_items, train, valid, test, train)
cfg = DiffRecConfig(epochs=1, steps=5)  # otherwise the ML-1M clean setting (the Config's defaults)
model = DiffRec(cfg, n_users, n_items).eval()
evaluator = Evaluator(data, (10, 20, 50, 100), 1024)
faults = []
for _ in range(int(sys.argv[2])):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    evaluator.evaluate(lambda u: model.scores(dense_rows(train, u)))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""


def run_child(code: str, *args: str, env_extra: dict | None = None) -> list[str]:
    """The stdout lines of ``python -c code args`` without the caller's GLIBC_TUNABLES (plus
    ``env_extra``)."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, env=env)
    return out.stdout.strip().splitlines()


def run_passes(mode: str, passes: int, env_extra: dict | None = None) -> tuple[str, list[int]]:
    flags, faults = run_child(PASSES, mode, str(passes), env_extra=env_extra)[-2:]
    return flags, json.loads(faults)


def test_evaluation_passes_stop_page_faulting():
    flags, faults = run_passes("set", 13)
    assert flags == "True True"  # set, and the second call reports it is already set
    # Warm passes (all but the first) fault 0-2 pages each, except a few in which the heap still
    # grows to its high-water mark (3,707 pages, one 1,024 x 3,706 score buffer; or 601-1,802):
    # up to three of twelve, as late as the eleventh pass (seen in a CI run with six passes: three
    # growth passes of six put the median at 301). Hence twelve warm passes and their median.
    assert median(faults[1:]) < 100
    # The control: glibc's starting thresholds (128 KiB), pinned so they cannot adapt, map and trim
    # the chunk buffers at every pass (measured: ~76,000 faults a warm pass, pass after pass).
    # glibc's own default is no control: its thresholds follow the largest block freed so far, and
    # its warm passes were measured anywhere from 1 to 11,400 faults.
    pinned = {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072:glibc.malloc.mmap_threshold=131072"}
    _, control_faults = run_passes("default", 4, pinned)
    assert min(control_faults[1:]) > 10_000


# Allocations of 64 MiB (above glibc's largest mmap threshold), each written and freed; prints the
# minor page faults of each round (a JSON list).
BIG_BLOCKS = """
import json, resource, sys, torch
from pipeline.allocator import keep_freed_memory
if sys.argv[1] == "set":
    keep_freed_memory()
faults = []
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 << 20).fill_(1.0)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""


def test_blocks_above_the_mmap_threshold_stay_too():
    """Freed 64 MiB blocks are reused by the next allocations, where glibc's default maps and
    unmaps each one (16,384 faults a round). With the setting the heap first grows to its
    high-water mark (torch aligns large blocks to 2 MiB, so the first rounds leave gaps; measured:
    faults in rounds 1-9, none after), so the last six of sixteen rounds count."""
    def rounds(mode):
        return json.loads(run_child(BIG_BLOCKS, mode)[-1])
    assert median(rounds("set")[-6:]) < 100
    assert median(rounds("default")[-6:]) > 10_000


# Steps of six 64 MiB blocks (384 MiB), written, then freed together from the top down as a step
# frees its buffers at its end; malloc and free straight from the C library, so that no other
# allocation lands between them. Prints the minor page faults of each step (a JSON list).
BIG_STEPS = """
import ctypes, json, resource, sys
from pipeline.allocator import keep_freed_memory
if sys.argv[1] == "set":
    keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = 64 << 20
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [libc.malloc(size) for _ in range(6)]
    for block in blocks:
        libc.memset(block, 1, size)
    for block in reversed(blocks):
        libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""


def test_a_step_that_frees_hundreds_of_mib_keeps_its_heap():
    """After the first step no step faults its 384 MiB in again. With the earlier 256 MiB trim
    threshold (pinned here, mapping off as before) the freed top went back to the system at each
    step's end and every step faulted it in anew (measured: 65,504 pages a step)."""
    steps = json.loads(run_child(BIG_STEPS, "set")[-1])
    assert max(steps[1:]) < 100
    before = {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=268435456:glibc.malloc.mmap_threshold=33554432:"
                                "glibc.malloc.mmap_max=0"}
    assert min(json.loads(run_child(BIG_STEPS, "default", env_extra=before)[-1])[1:]) > 10_000


def test_the_users_own_tunables_win():
    flags, _ = run_passes("set", 0, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"})
    assert flags == "False False"


def test_it_is_opt_in(monkeypatch):
    """``python -m pipeline`` leaves glibc alone unless PIPELINE_KEEP_FREED_MEMORY=1."""
    code = "from pipeline.allocator import keep_freed_memory_if_asked; print(keep_freed_memory_if_asked())"
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_KEEP_FREED_MEMORY"}
    run = lambda extra: subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True,  # noqa: E731
                                       text=True, check=True).stdout.strip()
    assert run({}) == "False"
    assert run({"PIPELINE_KEEP_FREED_MEMORY": "1"}) == "True"
