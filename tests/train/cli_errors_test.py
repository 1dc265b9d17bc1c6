"""The command line prints bad input as one paragraph, no traceback."""

import os
import subprocess
import sys

import pytest

from tests.train import assets


def _main(tmp_path, *flags):
  return subprocess.run(
      [
          sys.executable,
          "-m",
          "codir_jax.main",
          "--config",
          os.path.join(assets.REPO, "configs", "tiny.py"),
          f"--config.teacher.path={tmp_path / 'no_teacher'}",
          f"--config.task.data_dir={tmp_path / 'no_glue'}",
          f"--workdir={tmp_path / 'w'}",
          *flags,
      ],
      capture_output=True,
      text=True,
      timeout=300,
      cwd=assets.REPO,
  )


@pytest.mark.parametrize(
    "flag, named",
    [
        ("--config.loss.temperature=0", "config.loss.temperature = 0"),
        ("--config.optim.lr=1e-3", "config.teacher.path = "),
        (
            "--config.loss.temprature=0.1",
            "'temprature', did you mean 'temperature'?",
        ),
    ],
)
def test_bad_input_is_one_paragraph_and_traceback_is_opt_in(
    tmp_path, flag, named
):
  proc = _main(tmp_path, flag)
  assert proc.returncode == 1, proc.stderr
  assert proc.stderr.startswith("codir_jax: error: "), proc.stderr
  assert named in proc.stderr and "Traceback" not in proc.stderr
  assert len(proc.stderr.splitlines()) <= 4, proc.stderr
  assert not (tmp_path / "w" / "checkpoints").exists()
  if flag.endswith("temperature=0"):  # One case suffices for the opt-in.
    verbose = _main(tmp_path, flag, "--verbosity=1")
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr and named in verbose.stderr
