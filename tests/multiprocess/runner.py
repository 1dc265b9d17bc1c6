"""Starting runs for the multi-process tests, and reading what they wrote.

Every multi-process run goes through the launcher (`codir_jax.launch`);
single-process references run the same probe module (`child.py`) directly
with 4 CPU devices. Runs inherit the suite's JAX compilation-cache
directory (tests/conftest.py), so a program compiled by one run is loaded
by the next run of the same shapes and layout.

Speed only: processes get FAST_COMPILE in XLA_FLAGS unless a test passes
`xla=()` (the launcher keeps the caller's flags). It halves XLA's CPU
compile of the tiny train step, a cold run's largest cost. Both sides of a
comparison run with the same flags, so the same programs; only the float
rounding inside kernels differs from a default build (~1e-6 relative).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import safetensors.numpy

from tests.train import assets

REPO = assets.REPO
CHILD = "tests.multiprocess.child"


FAST_COMPILE = ("--xla_backend_optimization_level=0",)


def xla_flags(devices: int = 0, xla: tuple[str, ...] = FAST_COMPILE) -> str:
  """`xla`, then `devices` CPU devices (if > 0), as the launcher writes
  them."""
  device_flag = f"--xla_force_host_platform_device_count={devices}"
  return " ".join(xla + ((device_flag,) if devices else ()))


def env(xla: tuple[str, ...] = FAST_COMPILE, **extra) -> dict[str, str]:
  out = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1")
  out["XLA_FLAGS"] = xla_flags(0, xla)
  out.update({k: str(v) for k, v in extra.items()})
  return out


def launcher_cmd(
    n: int, devices: int, args: list[str], module: str = CHILD
) -> list[str]:
  return [
      sys.executable,
      "-m",
      "codir_jax.launch",
      f"--num_processes={n}",
      f"--devices_per_process={devices}",
      f"--module={module}",
      "--init_timeout_s=120",
      "--",
  ] + list(args)


def single_cmd(args: list[str]) -> list[str]:
  return [sys.executable, "-m", CHILD] + list(args)


@dataclasses.dataclass
class Result:
  rc: int
  out: str
  err: str
  wall_s: float

  def lines(self, prefix: str) -> list[str]:
    return [l for l in self.out.splitlines() if l.startswith(prefix)]


def start(
    cmd: list[str],
    *,
    n: int = 0,
    devices: int = 4,
    xla: tuple[str, ...] = FAST_COMPILE,
    **extra,
) -> subprocess.Popen:
  """Starts `cmd` with text pipes: a launcher of `n` processes, or (n=0)
  one process with `devices` CPU devices; `xla`: XLA flags."""
  e = env(xla, **extra)
  if not n:
    e["XLA_FLAGS"] = xla_flags(devices, xla)
  return subprocess.Popen(
      cmd,
      cwd=REPO,
      env=e,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )


def finish(proc: subprocess.Popen, t0: float, timeout: float = 900) -> Result:
  """Waits for `proc`; on a time-out kills it (its children die with it:
  the launcher's are set to) and raises."""
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.communicate()
    raise
  return Result(proc.returncode, out, err, time.monotonic() - t0)


def run(cmd: list[str], *, n: int = 0, ok: bool = True, **extra) -> Result:
  t0 = time.monotonic()
  r = finish(start(cmd, n=n, **extra), t0)
  if ok:
    assert r.rc == 0, f"exit {r.rc}\n{r.out[-3000:]}\n{r.err[-6000:]}"
  return r


def wait_for(path: str, proc: subprocess.Popen, timeout: float = 600):
  t0 = time.monotonic()
  while not os.path.exists(path):
    assert proc.poll() is None, f"ended (rc {proc.returncode}) before {path}"
    assert time.monotonic() - t0 < timeout, f"no {path} in {timeout} s"
    time.sleep(0.05)


def child_pids(launcher: subprocess.Popen) -> list[int]:
  """The process ids of the launcher's children, in process order."""
  pids = {}
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
      if ppid != launcher.pid:
        continue
      with open(f"/proc/{entry}/cmdline", "rb") as f:
        args = f.read().decode().split("\0")
    except OSError:
      continue
    flag = [a for a in args if a.startswith("--config.distributed.process_")]
    if flag:  # Else forked but not yet exec'd: the launcher's command line.
      pids[int(flag[0].split("=")[1])] = int(entry)
  return [pids[i] for i in sorted(pids)]


def kill(pid: int, sig=signal.SIGKILL) -> None:
  os.kill(pid, sig)


# --- what a run wrote -------------------------------------------------------


def rows(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


def summary(workdir: str) -> dict:
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def weights(export_dir: str) -> dict[str, np.ndarray]:
  return safetensors.numpy.load_file(
      os.path.join(export_dir, "model.safetensors")
  )


def checkpoints(workdir: str) -> list[int]:
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(s) for s in os.listdir(d) if s.isdigit())


def tensorboard_scalars(workdir: str) -> list[tuple[str, int, float]]:
  """(tag, step, value) of every event file under <workdir>/tensorboard.

  Read with the TFRecord framing (length, crc, payload, crc) and
  tensorboardX's Event proto: no TensorFlow or TensorBoard needed.
  """
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top

  out = []
  folder = os.path.join(workdir, "tensorboard")
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos : pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
      pos += 12 + length + 4
      for v in event.summary.value:
        out.append((v.tag, int(event.step), float(v.simple_value)))
  return sorted(out)


def bank_bytes(probe: str, process: int) -> dict:
  with open(os.path.join(probe, f"bank_{process}.json")) as f:
    return json.load(f)


def fed_rows(probe: str, process: int) -> dict[int, dict[str, np.ndarray]]:
  """{step index: {key: rows this process fed}} from child.py's probe."""
  with np.load(os.path.join(probe, f"steps_{process}.npz")) as z:
    out: dict[int, dict[str, np.ndarray]] = {}
    for key in z.files:
      i, name = key.split("/", 1)
      out.setdefault(int(i), {})[name] = z[key]
  return out
