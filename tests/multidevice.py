"""Runs a Python script in a subprocess that sees N fake CPU devices.

XLA reads `--xla_force_host_platform_device_count` once, when JAX starts, so
a test that needs 8 devices cannot get them in the pytest process. The script
should compare its 1-device and N-device results itself and exit non-zero
(e.g. through a failed `assert`/`np.testing`) when they differ; whatever it
prints is returned so a test can also parse a JSON line.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_script(code: str, *, n_devices: int = 8, timeout: float = 600) -> str:
  """Runs `code` with `n_devices` fake CPU devices; returns its stdout."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
      env.get("XLA_FLAGS", "")
      + f" --xla_force_host_platform_device_count={n_devices}"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(
      [str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")]
  )
  prelude = (
      "import jax\n"
      "jax.config.update('jax_default_matmul_precision', 'highest')\n"
      f"assert jax.device_count() == {n_devices}, jax.devices()\n"
  )
  proc = subprocess.run(
      [sys.executable, "-c", prelude + textwrap.dedent(code)],
      env=env,
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=timeout,
  )
  if proc.returncode != 0:
    raise AssertionError(
        f"multi-device script failed (exit {proc.returncode}):\n"
        f"--- stdout ---\n{proc.stdout[-4000:]}\n"
        f"--- stderr ---\n{proc.stderr[-8000:]}"
    )
  return proc.stdout
