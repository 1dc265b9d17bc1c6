"""The launcher's contract, with a JAX-free stand-in process (toy.py)."""

import signal
import time

import pytest

from codir_jax import launch
from tests.multiprocess import runner

pytestmark = pytest.mark.multiprocess


def _start(n, mode):
  """The launcher with `n` toy processes of 3 devices; the caller's
  XLA_FLAGS say 8 devices."""
  cmd = runner.launcher_cmd(n, 3, [mode], module="tests.multiprocess.toy")
  return runner.start(cmd, n=n, XLA_FLAGS=runner.xla_flags(8))


def test_each_process_gets_its_flags_and_prefixed_lines():
  r = runner.finish(_start(3, "echo"), time.monotonic(), timeout=60)
  out, err = r.out, r.err
  assert r.rc == 0, err
  port = None
  for i in range(3):
    flags, env = [l[4:] for l in out.splitlines() if l.startswith(f"[{i}] ")]
    assert "--config.distributed.initialize=true" in flags
    assert f"--config.distributed.process_id={i}" in flags
    assert "--config.distributed.num_processes=3" in flags
    assert "--config.distributed.cpu_collectives=gloo" in flags
    address = flags.split("coordinator_address=")[1].split()[0]
    assert address.startswith("127.0.0.1:")
    assert port in (None, address)
    port = address
    # The caller's device count is replaced, not appended to; its other
    # XLA flags are kept.
    assert env == runner.xla_flags(3) + " cpu"
    assert f"[{i}] stderr line" in err.splitlines()


def test_a_failed_process_ends_the_others_within_the_bound():
  r = runner.finish(_start(2, "fail"), time.monotonic(), timeout=60)
  assert r.rc == 3, (r.out, r.err)
  assert "[launch] process 1 exited with status 3" in r.err
  # Process 1 fails after 0.5 s; process 0 ignores SIGTERM and is killed.
  assert r.wall_s < 0.5 + launch.GRACE_S + 1 + 2, r.wall_s


def test_sigterm_is_forwarded_to_every_process():
  proc = _start(2, "term")
  time.sleep(0.2)
  deadline = time.monotonic() + 30
  while len(runner.child_pids(proc)) < 2 and time.monotonic() < deadline:
    time.sleep(0.05)
  time.sleep(1.0)  # Let both install their handler.
  proc.send_signal(signal.SIGTERM)
  r = runner.finish(proc, time.monotonic(), timeout=30)
  assert r.rc == 0, r.err
  assert "[0] saved" in r.out and "[1] saved" in r.out
