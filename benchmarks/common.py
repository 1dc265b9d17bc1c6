"""What the benchmark scripts share: flags, pinning, workers, timing, machine.

Not a benchmark. Every script runs each framework in its own subprocess
(`run_worker`, `worker_main`), pinned to the same cores (`pin_cores`), and
prints with every table the machine line of `machine_info` (CPU model,
ISA, bf16 support, XLA's dot backend) and the load before the run
(`load_snapshot`), because the JAX / PyTorch ratios depend on them: with
AVX-512 XLA's dots reach 275-380 GFLOP/s on the CoDIR step, with AVX2 only
about 76 GFLOP/s, the same as PyTorch.

Scripts import this module as `common` (they run as
`python benchmarks/<script>.py`, which puts benchmarks/ on sys.path).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Mapping, Sequence

DEFAULT_THREADS = len(os.sched_getaffinity(0))
# (HLO marker, name): how XLA lowers a dot, from the compiled HLO text.
_DOT_MARKERS = (
    ("__ynn_fusion", "YNNPACK fusion"),
    ("__onednn$", "oneDNN custom call"),
    ("xnn", "XNNPACK"),
    ("__cublas$", "cuBLAS custom call"),
    ("__cudnn$", "cuDNN custom call"),
    ("__triton", "Triton fusion"),
)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
  """Flags of train_step.py, contrastive_overhead.py, inference.py, ..."""
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--seq_len", type=int, default=128)
  parser.add_argument("--steps", type=int, default=5, help="timed steps")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps")
  parser.add_argument(
      "--small",
      action="store_true",
      help="tiny models and sizes: a fast smoke run",
  )
  parser.add_argument(
      "--threads",
      type=int,
      default=DEFAULT_THREADS,
      help="CPU cores to pin each framework to",
  )
  parser.add_argument("--num_labels", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
      "--teacher",
      default="bert-base",
      choices=("bert-base", "minilm-l6"),
      help="random-weight teacher sizes (student: every other layer)",
  )


def add_worker_flags(parser: argparse.ArgumentParser) -> None:
  """--out and the hidden flags `run_worker` passes to the subprocess."""
  parser.add_argument("--out", default=None, help="JSON results file")
  parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--_result", default=None, help=argparse.SUPPRESS)


def pin_cores(threads: int) -> list[int]:
  """Pins this process to the first `threads` allowed cores."""
  cores = sorted(os.sched_getaffinity(0))[:threads]
  os.sched_setaffinity(0, cores)
  return cores


# ---------------------------------------------------------------------------
# Workers: one subprocess per framework.


def worker_argv(args: argparse.Namespace) -> list[str]:
  """This process's command line minus `--out FILE` (for the workers)."""
  argv = [a for a in sys.argv[1:] if not a.startswith("--out")]
  if getattr(args, "out", None):
    argv = [a for a in argv if a != args.out]
  return argv


def run_worker(
    script: str,
    framework: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
) -> Any:
  """Runs `script --_worker framework argv` and returns its JSON result."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "result.json")
    cmd = [
        sys.executable,
        script,
        "--_worker",
        framework,
        "--_result",
        out,
        *argv,
    ]
    subprocess.run(cmd, check=True, env=None if env is None else dict(env))
    with open(out) as f:
      return json.load(f)


def worker_main(
    args: argparse.Namespace,
    workers: Mapping[str, Callable[[argparse.Namespace], Any]],
    *,
    pin: bool = True,
) -> bool:
  """In a worker subprocess: runs `workers[args._worker]`, writes its JSON.

  Returns:
    True if this process was a worker (the caller then returns), else False.
  """
  name = args._worker  # pylint: disable=protected-access
  if not name:
    return False
  if pin:
    pin_cores(args.threads)
  result = workers[name](args)
  with open(args._result, "w") as f:  # pylint: disable=protected-access
    json.dump(result, f)
  return True


# ---------------------------------------------------------------------------
# Timing.


def time_calls(
    fn: Callable[[], Any], *, steps: int, warmup: int
) -> tuple[list[float], Any]:
  """Seconds of each of `steps` calls after `warmup` untimed ones.

  `fn` must block until its work is done. Returns (times, last result).
  """
  times, out = [], None
  for i in range(warmup + steps):
    t0 = time.perf_counter()
    out = fn()
    if i >= warmup:
      times.append(time.perf_counter() - t0)
  return times, out


def interleaved(
    fns: Mapping[str, Callable[[], Any]], *, steps: int, warmup: int
) -> dict[str, list[float]]:
  """Times every fn in rounds (one call of each per round).

  Interleaving makes load from other processes on a shared CPU hit all
  variants alike. Returns {name: per-call seconds of the timed rounds}.
  """
  times = {name: [] for name in fns}
  for i in range(warmup + steps):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      fn()
      if i >= warmup:
        times[name].append(time.perf_counter() - t0)
  return times


def median(times: Sequence[float]) -> float:
  return statistics.median(times)


# ---------------------------------------------------------------------------
# Machine and load report.


def load_snapshot() -> str:
  """Load averages and the other busy processes, for the record."""
  with open("/proc/loadavg") as f:
    load = " ".join(f.read().split()[:3])
  ps = subprocess.run(
      ["ps", "-eo", "pid,pcpu,etime,args", "--sort=-pcpu"],
      capture_output=True,
      text=True,
      check=False,
  ).stdout.splitlines()
  me = {os.getpid(), os.getppid()}
  busy = [
      l.strip()[:100]
      for l in ps[1:6]
      if float(l.split()[1]) > 10 and int(l.split()[0]) not in me
  ]
  return f"load {load}; busy: {busy or 'none'}"


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
  """CPU model, ISA and bf16 support from /proc/cpuinfo (or the text given).

  Returns:
    {'model', 'isa' ('AVX-512' | 'AVX2 (no AVX-512)' | 'unknown ...'),
    'bf16' (avx512_bf16 and amx* flags, e.g. 'amx_bf16, amx_tile,
    avx512_bf16', or 'none'), 'cores' (allowed to this process)}.
  """
  if cpuinfo is None:
    try:
      with open("/proc/cpuinfo") as f:
        cpuinfo = f.read()
    except OSError:
      cpuinfo = ""
  model, flags = "unknown", set()
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(":")
    if key.strip() == "model name" and model == "unknown":
      model = value.strip()
    elif key.strip() == "flags" and not flags:
      flags = set(value.split())
  if "avx512f" in flags:
    isa = "AVX-512"
  elif "avx2" in flags:
    isa = "AVX2 (no AVX-512)"
  else:
    isa = "unknown (no AVX2/AVX-512 flag)" if flags else "unknown"
  bf16 = sorted(f for f in flags if f == "avx512_bf16" or f.startswith("amx"))
  return dict(
      model=model,
      isa=isa,
      bf16=", ".join(bf16) or "none",
      cores=DEFAULT_THREADS,
  )


def dot_backend() -> dict[str, str]:
  """How XLA lowers a float32 dot here, read from the compiled HLO.

  Imports JAX: call it in a worker, or through `probe_dot_backend`.
  Returns {'platform', 'dot', 'xla_flags'}; 'dot' is 'unknown' when no
  known library marker shows in the HLO.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  x = jnp.ones((128, 128), jnp.float32)
  text = jax.jit(lambda a, b: a @ b).lower(x, x).compile().as_text()
  found = [name for marker, name in _DOT_MARKERS if marker in text]
  if found:
    dot = found[0] + " (in the compiled HLO)"
  elif " dot(" in text and jax.default_backend() == "cpu":
    dot = "XLA DotThunk, Eigen (a plain dot in the compiled HLO)"
  else:
    dot = "unknown (plain HLO dot, library not visible)"
  return dict(
      platform=f"{jax.default_backend()} jax {jax.__version__}",
      dot=dot,
      xla_flags=os.environ.get("XLA_FLAGS", "") or "none",
  )


def probe_dot_backend(env: Mapping[str, str] | None = None) -> dict[str, str]:
  """`dot_backend()` in a short subprocess (keeps JAX out of the driver)."""
  code = (
      "import json, sys; sys.path.insert(0, sys.argv[1]); "
      "import common; print(json.dumps(common.dot_backend()))"
  )
  try:
    out = subprocess.run(
        [sys.executable, "-c", code, os.path.dirname(__file__)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        env=None if env is None else dict(env),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
  except (subprocess.SubprocessError, ValueError, IndexError):
    return dict(platform="unknown", dot="unknown", xla_flags="unknown")


def machine_info(
    *, env: Mapping[str, str] | None = None, probe_dot: bool = True
) -> dict[str, Any]:
  """CPU facts plus, with `probe_dot`, XLA's dot backend (a subprocess)."""
  info = cpu_info()
  if probe_dot:
    info.update(probe_dot_backend(env))
  else:
    info.update(
        platform="n/a",
        dot="n/a (no JAX in this benchmark)",
        xla_flags=os.environ.get("XLA_FLAGS", "") or "none",
    )
  return info


def machine_line(info: Mapping[str, Any]) -> str:
  """One line for the tables: 'machine: CPU ... | ISA ... | bf16 ... | ...'."""
  return (
      f"machine: CPU {info['model']} ({info['cores']} cores allowed) | "
      f"ISA {info['isa']} | bf16 {info['bf16']} | XLA dot backend "
      f"({info['platform']}): {info['dot']} | XLA_FLAGS "
      f"{info['xla_flags']}"
  )
