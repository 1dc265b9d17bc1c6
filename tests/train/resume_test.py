"""A killed, then preempted, then resumed run ends like an uninterrupted one.

Four CLI processes: the uninterrupted reference, and one workdir's run
killed with SIGKILL, resumed and preempted with SIGTERM, resumed to the end
(tests/train/slow_child.py pauses a child so that each signal lands before
a known step). The end state is bit-identical to the reference's.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import safetensors.numpy

from tests.train import assets

CHILD = os.path.join(os.path.dirname(__file__), "slow_child.py")
LOG_EVERY = 4  # Steps per train row, between evaluations, per checkpoint.


def _cmd(tiny_dirs, workdir, pause_at=0, signals=""):
  teacher, data = tiny_dirs
  return [
      sys.executable,
      CHILD,
      str(pause_at),
      str(signals),
      "--config",
      os.path.join(assets.REPO, "configs", "tiny.py"),
      "--workdir",
      str(workdir),
      f"--config.teacher.path={teacher}",
      f"--config.task.data_dir={data}",
      "--config.optim.num_steps=12",
      f"--config.ckpt.every_steps={LOG_EVERY}",
      f"--config.log.every_steps={LOG_EVERY}",
      f"--config.log.eval_every_steps={LOG_EVERY}",
      "--config.eval.compare_teacher=false",
  ]


def _env():
  # Without XLA's backend optimisations the reference's cold compile takes
  # half the time; the processes are compared only with one another (and
  # share their programs through the suite's compilation cache).
  return dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      HF_HUB_OFFLINE="1",
      XLA_FLAGS="--xla_backend_optimization_level=0",
  )


def _run(cmd):
  proc = subprocess.run(
      cmd, env=_env(), capture_output=True, text=True, timeout=600
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def _start_paused(tiny_dirs, workdir, pause_at, signals):
  """A child paused before its `pause_at`-th step; its output goes to files."""
  os.makedirs(signals)
  out = open(os.path.join(signals, "stdout"), "w")
  err = open(os.path.join(signals, "stderr"), "w")
  proc = subprocess.Popen(
      _cmd(tiny_dirs, workdir, pause_at, signals),
      env=_env(),
      stdout=out,
      stderr=err,
  )
  out.close()
  err.close()
  t0 = time.time()
  while not os.path.exists(os.path.join(signals, "paused")):
    if proc.poll() is not None:
      raise AssertionError(_read(signals, "stderr")[-4000:])
    assert time.time() - t0 < 600, "the child never paused"
    time.sleep(0.02)
  return proc


def _read(signals, name):
  with open(os.path.join(signals, name)) as f:
    return f.read()


def _checkpoints(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(s) for s in os.listdir(d) if s.isdigit())


def _outcome(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  weights = safetensors.numpy.load_file(
      os.path.join(workdir, "student", "model.safetensors")
  )
  return rows, summary, weights


def _check_same(ref_dir, got_dir, resumes):
  ref_rows, ref_sum, ref_w = _outcome(ref_dir)
  rows, summary, weights = _outcome(got_dir)
  assert summary["dev"] == ref_sum["dev"]
  assert summary["best_dev"] == ref_sum["best_dev"]
  assert summary["steps"] == ref_sum["steps"] == 12
  assert sorted(weights) == sorted(ref_w)
  for k in ref_w:
    np.testing.assert_array_equal(weights[k], ref_w[k], err_msg=k)
  # A train row averages the steps since the previous row; one whose window
  # spans a resume point covers only the steps after it. Every other row
  # the reference also has (evaluations included) is identical to it.
  key = lambda r: (r["step"], r["split"])
  assert len({key(r) for r in rows}) == len(rows)  # No repeated rows.
  ref = {key(r): r for r in ref_rows}
  compared = [
      r
      for r in rows
      if key(r) in ref
      and not (
          r["split"] == "train"
          and any(r["step"] - LOG_EVERY < p < r["step"] for p in resumes)
      )
  ]
  for r in compared:
    assert r == ref[key(r)], (r, ref[key(r)])
  # Rows of each of the three processes were compared.
  want = {(4, "train"), (4, "eval"), (8, "train"), (8, "eval"), (12, "eval")}
  assert want <= {key(r) for r in compared}, compared


def test_killed_then_preempted_run_matches_uninterrupted(tiny_dirs, tmp_path):
  reference = str(tmp_path / "reference")
  _run(_cmd(tiny_dirs, reference))
  workdir = str(tmp_path / "run")
  summary = os.path.join(workdir, "summary.json")

  # SIGKILL before step 6: step 5 ran, checkpoint 4 is the newest saved.
  proc = _start_paused(tiny_dirs, workdir, 6, tmp_path / "killed")
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert not os.path.exists(summary)
  assert _checkpoints(workdir) == [4]

  # Resumed, then a preemption notice (SIGTERM) before its 6th step, step
  # 10: the step runs, is saved, and the process ends cleanly.
  signals = tmp_path / "preempted"
  proc = _start_paused(tiny_dirs, workdir, 6, signals)
  proc.send_signal(signal.SIGTERM)
  open(signals / "go", "w").close()
  assert proc.wait(timeout=600) == 0, _read(signals, "stderr")[-3000:]
  stdout = _read(signals, "stdout")
  assert "Resumed from step 4 " in stdout, stdout
  assert "Preempted at step 10;" in stdout, stdout
  assert _checkpoints(workdir) == [4, 8, 10]
  assert not os.path.exists(summary)

  out = _run(_cmd(tiny_dirs, workdir))
  assert "Resumed from step 10 " in out.stdout
  _check_same(reference, workdir, resumes=(4, 10))
