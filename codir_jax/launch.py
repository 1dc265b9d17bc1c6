"""Local launcher: N processes on this machine form one JAX cluster.

  python -m codir_jax.launch --num_processes 2 --devices_per_process 2 -- \
      --config configs/tiny.py --workdir /tmp/run --config.teacher.path=...

How a pod run behaves, tried on one machine (CPU devices only). Process i
runs `python -m codir_jax.main <the arguments after -->` with
  JAX_PLATFORMS=cpu and XLA_FLAGS=--xla_force_host_platform_device_count=D,
  --config.distributed.initialize=true, coordinator_address=127.0.0.1:PORT
  (a free port), num_processes=N, process_id=i, cpu_collectives=gloo,
  CODIR_JAX_INIT_TIMEOUT_S=--init_timeout_s (distributed.py).
Every output line of process i is printed with the prefix "[i] " (stdout
to stdout, stderr to stderr).

Signals: SIGTERM and SIGINT sent to the launcher are forwarded to every
process; SIGTERM is a preemption notice (each saves the agreed step and
exits 0). The processes run in their own session and, on Linux, are killed
if the launcher itself is killed.

Failure: once a process exits with a non-zero status (or a signal), the
others get GRACE_S seconds to end by themselves and are then killed
(SIGKILL), so every process has ended within GRACE_S + 1 s of the first
failure; the launcher then exits with that first status (128 + signal
number for a signal). It exits 0 when every process exits 0.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO

from absl import app
from absl import flags

_NUM = flags.DEFINE_integer(
    "num_processes",
    None,
    "Processes to start (simulated hosts).",
    lower_bound=1,
)
_DEVICES = flags.DEFINE_integer(
    "devices_per_process", 1, "CPU devices of each process.", lower_bound=1
)
_MODULE = flags.DEFINE_string(
    "module", "codir_jax.main", "Python module each process runs."
)
_TIMEOUT = flags.DEFINE_integer(
    "init_timeout_s",
    60,
    "Seconds the processes wait for each other at start-up.",
    lower_bound=1,
)
flags.mark_flag_as_required("num_processes")

GRACE_S = 5.0  # After the first failure, before the rest are killed.
_POLL_S = 0.05
_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on right now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(devices: int, timeout_s: int) -> dict[str, str]:
  """The environment of every process: D CPU devices, unbuffered output."""
  env = dict(os.environ)
  kept = [f for f in env.get("XLA_FLAGS", "").split() if _DEVICE_FLAG not in f]
  env["XLA_FLAGS"] = " ".join(kept + [f"{_DEVICE_FLAG}={devices}"])
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONUNBUFFERED"] = "1"
  env["CODIR_JAX_INIT_TIMEOUT_S"] = str(timeout_s)
  return env


def process_args(args: list[str], n: int, i: int, port: int) -> list[str]:
  """The CLI arguments of process `i` of `n`."""
  return list(args) + [
      "--config.distributed.initialize=true",
      f"--config.distributed.coordinator_address=127.0.0.1:{port}",
      f"--config.distributed.num_processes={n}",
      f"--config.distributed.process_id={i}",
      "--config.distributed.cpu_collectives=gloo",
  ]


def _die_with_parent() -> None:
  """In the child before exec: SIGKILL when the launcher dies (Linux)."""
  if sys.platform.startswith("linux"):
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _pump(stream: IO[str], out: IO[str], prefix: str, lock) -> None:
  for line in stream:
    with lock:
      out.write(prefix + line)
      out.flush()


def _status(rc: int) -> int:
  return 128 - rc if rc < 0 else rc


class Cluster:
  """The N processes, their output pumps and their fate."""

  def __init__(self, argv: list[str], n: int, devices: int, module: str):
    port = free_port()
    env = process_env(devices, _TIMEOUT.value)
    self.procs = [
        subprocess.Popen(
            [sys.executable, "-m", module] + process_args(argv, n, i, port),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        for i in range(n)
    ]
    lock = threading.Lock()
    self.pumps = [
        threading.Thread(
            target=_pump, args=(stream, out, f"[{i}] ", lock), daemon=True
        )
        for i, p in enumerate(self.procs)
        for stream, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr))
    ]
    for t in self.pumps:
      t.start()

  def signal_all(self, signum: int) -> None:
    for p in self.procs:
      if p.poll() is None:
        try:
          p.send_signal(signum)
        except ProcessLookupError:
          pass

  def wait(self) -> int:
    """Waits for every process; returns the launcher's exit status."""
    first_failure, failed_at = 0, None
    while True:
      codes = [p.poll() for p in self.procs]
      if all(c is not None for c in codes):
        break
      for i, c in enumerate(codes):
        if c not in (None, 0) and failed_at is None:
          first_failure, failed_at = _status(c), time.monotonic()
          print(
              f"[launch] process {i} exited with status {_status(c)};"
              f" killing the others in {GRACE_S:.0f} s",
              file=sys.stderr,
              flush=True,
          )
      if failed_at is not None and time.monotonic() - failed_at > GRACE_S:
        self.signal_all(signal.SIGKILL)
      time.sleep(_POLL_S)
    for t in self.pumps:
      t.join(timeout=5)
    if not first_failure:
      first_failure = next((_status(c) for c in codes if c), 0)
    return first_failure


def main(argv: list[str]) -> None:
  args = argv[1:]
  if not args:
    raise app.UsageError("give the CLI arguments after --")
  cluster = Cluster(args, _NUM.value, _DEVICES.value, _MODULE.value)
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda s, _: cluster.signal_all(s))
  sys.exit(cluster.wait())


if __name__ == "__main__":
  app.run(main)
