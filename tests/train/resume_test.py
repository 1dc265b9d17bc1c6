"""Killed-and-resumed runs end exactly like an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import safetensors.numpy

from tests.train import assets

CHILD = os.path.join(os.path.dirname(__file__), "slow_child.py")


def _cmd(tiny_dirs, workdir, delay):
  teacher, data = tiny_dirs
  return [
      sys.executable,
      CHILD,
      str(delay),
      "--config",
      os.path.join(assets.REPO, "configs", "tiny.py"),
      "--workdir",
      workdir,
      f"--config.teacher.path={teacher}",
      f"--config.task.data_dir={data}",
      "--config.optim.num_steps=12",
      "--config.ckpt.every_steps=4",
      "--config.log.every_steps=4",
      "--config.log.eval_every_steps=4",
  ]


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1")
  env.pop("XLA_FLAGS", None)
  return env


def _run(cmd):
  proc = subprocess.run(
      cmd, env=_env(), capture_output=True, text=True, timeout=600
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def _wait_for(path, proc, timeout=300):
  t0 = time.time()
  while not os.path.isdir(path):
    assert proc.poll() is None, "child ended before the checkpoint appeared"
    assert time.time() - t0 < timeout
    time.sleep(0.02)


def _outcome(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  weights = safetensors.numpy.load_file(
      os.path.join(workdir, "student", "model.safetensors")
  )
  return rows, summary, weights


def _check_same(ref_dir, got_dir, resumed_after):
  ref_rows, ref_sum, ref_w = _outcome(ref_dir)
  rows, summary, weights = _outcome(got_dir)
  assert summary["dev"] == ref_sum["dev"]
  assert summary["best_dev"] == ref_sum["best_dev"]
  assert summary["steps"] == ref_sum["steps"] == 12
  assert sorted(weights) == sorted(ref_w)
  for k in ref_w:
    np.testing.assert_array_equal(weights[k], ref_w[k], err_msg=k)
  # Rows whose whole window (log every 4 steps) lies after the resume point
  # are identical to the reference; eval rows after it too.
  key = lambda r: (r["step"], r["split"])
  ref = {key(r): r for r in ref_rows}
  after = [
      r
      for r in rows
      if r["step"] - (4 if r["split"] == "train" else 0) >= resumed_after
      and r["step"] > resumed_after
  ]
  assert after
  for r in after:
    assert r == ref[key(r)], (r, ref[key(r)])


@pytest.fixture(scope="module")
def reference(tiny_dirs, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ref") / "run")
  _run(_cmd(tiny_dirs, workdir, 0.0))
  return workdir


def test_sigkill_then_resume_matches_uninterrupted(
    tiny_dirs, reference, tmp_path
):
  workdir = str(tmp_path / "killed")
  proc = subprocess.Popen(
      _cmd(tiny_dirs, workdir, 0.4),
      env=_env(),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
  )
  _wait_for(os.path.join(workdir, "checkpoints", "4"), proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert not os.path.exists(os.path.join(workdir, "summary.json"))
  steps = sorted(
      int(s)
      for s in os.listdir(os.path.join(workdir, "checkpoints"))
      if s.isdigit()
  )
  assert steps and steps[-1] < 12
  out = _run(_cmd(tiny_dirs, workdir, 0.0))
  assert f"Resumed from step {steps[-1]}" in out.stdout
  _check_same(reference, workdir, steps[-1])


def test_sigterm_saves_and_resumes(tiny_dirs, reference, tmp_path):
  workdir = str(tmp_path / "preempted")
  proc = subprocess.Popen(
      _cmd(tiny_dirs, workdir, 0.4),
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  _wait_for(os.path.join(workdir, "checkpoints", "4"), proc)
  proc.send_signal(signal.SIGTERM)
  stdout, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 0, stderr[-3000:]
  assert "Preempted at step" in stdout
  saved = int(stdout.split("Preempted at step ")[1].split(";")[0])
  assert 4 <= saved < 12
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(saved)))
  assert not os.path.exists(os.path.join(workdir, "summary.json"))
  out = _run(_cmd(tiny_dirs, workdir, 0.0))
  assert f"Resumed from step {saved}" in out.stdout
  _check_same(reference, workdir, saved)
