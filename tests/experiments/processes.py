"""Child processes that compile fast: experiment scripts, notebook kernels.

Compiling the train steps is most of what the experiments tests cost, and
XLA reads its flags once, when a process starts: a child process can use
FAST_COMPILE (XLA's cheap CPU settings, about a third of the default's
compile time for the tiny train step), the pytest process cannot. Only
float rounding inside a fused kernel differs from a default build.

Children inherit the environment, including the suite's JAX compilation
cache directory (tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.train import assets

FAST_COMPILE = (
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true",
)


def env(**extra: str | None) -> dict[str, str]:
  """os.environ with FAST_COMPILE and `extra` (None removes a variable)."""
  out = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}
  out["XLA_FLAGS"] = " ".join(FAST_COMPILE)
  out.update(extra)
  return {k: v for k, v in out.items() if v is not None}


def run_script(name: str, argv: list[str], *, timeout_s: float = 600) -> str:
  """Runs experiments/<name> with `argv`; returns its output.

  Raises:
    AssertionError: the script failed (its output's tail in the message).
  """
  proc = subprocess.run(
      [sys.executable, os.path.join(assets.REPO, "experiments", name), *argv],
      env=env(),
      cwd=assets.REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      timeout=timeout_s,
      check=False,
  )
  if proc.returncode != 0:
    raise AssertionError(
        f"experiments/{name} exited with {proc.returncode}:\n"
        + proc.stdout[-8000:]
    )
  return proc.stdout
