"""Distillation with the bank on 2 processes x 2 devices against 1 x 4.

Every run is a real CLI process tree: `codir_jax.launch` starts the
processes, which form one JAX cluster over gloo (tests/multiprocess/
child.py adds probes). The references run one process with 4 devices.
"""

import json
import os
import re
import signal
import time

import numpy as np
import pytest

from codir_jax import launch
from tests.multiprocess import runner

pytestmark = pytest.mark.multiprocess

STEPS = 8
N_TRAIN, PROJ = 40, 16  # Bank slots N and projection size P (tiny.py).


def _args(d, workdir, *extra, config="configs/tiny.py"):
  return [
      f"--config={config}",
      f"--workdir={workdir}",
      f"--config.teacher.path={d['teacher']}",
      f"--config.task.data_dir={d['glue']}",
      f"--config.optim.num_steps={STEPS}",
      "--config.log.every_steps=1",
      "--config.log.eval_every_steps=4",
      "--config.log.tensorboard=true",
      # Only the final checkpoint (a save costs ~1 s); the preemption tests
      # save every step.
      "--config.ckpt.every_steps=1000",
      "--config.ckpt.keep=20",
      "--config.eval.compare_teacher=false",
  ] + list(extra)


def _single(d, tmp, name, *extra, **env):
  workdir, probe = str(tmp / name), str(tmp / f"{name}_probe")
  os.makedirs(probe)
  r = runner.run(
      runner.single_cmd(_args(d, workdir, *extra)),
      CODIR_TEST_PROBE=probe,
      **env,
  )
  return workdir, probe, r


def _launched(d, tmp, name, *extra, config="configs/tiny.py"):
  workdir, probe = str(tmp / name), str(tmp / f"{name}_probe")
  os.makedirs(probe)
  cmd = runner.launcher_cmd(2, 2, _args(d, workdir, *extra, config=config))
  return workdir, probe, runner.run(cmd, n=2, CODIR_TEST_PROBE=probe)


@pytest.fixture(scope="module")
def reference(mp_dirs, tmp_path_factory):
  """1 process x 4 devices."""
  return _single(mp_dirs, tmp_path_factory.mktemp("ref"), "run")


@pytest.fixture(scope="module")
def two_by_two(mp_dirs, tmp_path_factory):
  """2 processes x 2 devices through the launcher."""
  return _launched(mp_dirs, tmp_path_factory.mktemp("mp"), "run")


def _config(workdir):
  with open(os.path.join(workdir, "config.json")) as f:
    c = json.load(f)
  return c.pop("distributed"), c


def _same_outcome(ref_dir, got_dir, *, config_differs=()):
  """Metrics within 1e-5 (relative), dev metrics equal, exports within
  1e-5 (relative, + 1e-7 absolute for weights near 0); the configs differ
  only in the distributed group and `config_differs`."""
  rtol, atol = 1e-5, 1e-7
  ref_rows, got_rows = runner.rows(ref_dir), runner.rows(got_dir)
  key = lambda r: (r["step"], r["split"])
  assert [key(r) for r in got_rows] == [key(r) for r in ref_rows]
  assert len(ref_rows) == STEPS + 2  # One row a step, 2 evaluations.
  worst = 0.0  # The largest relative metric difference (for the log).
  for ref, got in zip(ref_rows, got_rows):
    assert sorted(got) == sorted(ref)
    if ref["split"] == "eval":
      assert got == ref
    for k, v in ref.items():
      if k != "split":
        np.testing.assert_allclose(got[k], v, rtol=rtol, atol=0, err_msg=k)
        worst = max(worst, abs(got[k] - v) / max(abs(v), 1e-30))
  ref_sum, got_sum = runner.summary(ref_dir), runner.summary(got_dir)
  for k in ("dev", "best_dev", "steps", "mode", "task"):
    assert got_sum[k] == ref_sum[k], k
  for name in ("student", "best"):
    ref_w = runner.weights(os.path.join(ref_dir, name))
    got_w = runner.weights(os.path.join(got_dir, name))
    assert sorted(got_w) == sorted(ref_w)
    for k in ref_w:
      np.testing.assert_allclose(got_w[k], ref_w[k], rtol=rtol, atol=atol)
    diff = max(float(np.max(np.abs(got_w[k] - ref_w[k]))) for k in ref_w)
    print(f"{name}: exported weights max abs difference {diff:.1e}")
    for f in ("config.json", "tokenizer.json"):
      with open(os.path.join(ref_dir, name, f), "rb") as a:
        with open(os.path.join(got_dir, name, f), "rb") as b:
          assert a.read() == b.read(), (name, f)
  print(f"logged metrics: max relative difference {worst:.1e}")
  ref_tb = runner.tensorboard_scalars(ref_dir)
  got_tb = runner.tensorboard_scalars(got_dir)
  assert [t[:2] for t in got_tb] == [t[:2] for t in ref_tb]
  np.testing.assert_allclose(
      [t[2] for t in got_tb], [t[2] for t in ref_tb], rtol=rtol, atol=0
  )
  assert len(os.listdir(os.path.join(got_dir, "tensorboard"))) == 1
  ref_c, got_c = _config(ref_dir)[1], _config(got_dir)[1]
  for k in config_differs:
    assert got_c.pop(k) != ref_c.pop(k)
  assert got_c == ref_c


def _same_exports(ref_dir, got_dir):
  """The final and best students are equal to the last bit."""
  for name in ("student", "best"):
    ref_w = runner.weights(os.path.join(ref_dir, name))
    got_w = runner.weights(os.path.join(got_dir, name))
    assert sorted(got_w) == sorted(ref_w)
    for k in ref_w:
      np.testing.assert_array_equal(got_w[k], ref_w[k], err_msg=(name, k))


def _bank_per_device(probe, process, n_data):
  bank = runner.bank_bytes(probe, process)
  for side in ("student", "teacher"):
    vec = bank[f"{side}.vectors"]
    assert vec["shape"] == [N_TRAIN, PROJ]
    assert vec["per_device"] == [N_TRAIN * PROJ * 4 // n_data], (side, vec)


def test_two_processes_match_one_process(reference, two_by_two):
  ref_dir, ref_probe, _ = reference
  got_dir, got_probe, r = two_by_two
  _same_outcome(ref_dir, got_dir)
  assert _config(got_dir)[0]["num_processes"] == 2
  # Process 0 alone reports and writes; process 1 trains silently.
  assert r.lines("[0] == distill sst2 ==")
  assert not r.lines("[1] == distill sst2 ==")
  # Bank: N*P*4 bytes split over the 4 devices of 'data' in both layouts.
  _bank_per_device(ref_probe, 0, 4)
  for p in (0, 1):
    _bank_per_device(got_probe, p, 4)
  # Each process fed its own half of every global batch.
  ref_fed = runner.fed_rows(ref_probe, 0)
  fed = [runner.fed_rows(got_probe, p) for p in (0, 1)]
  assert len(ref_fed) == len(fed[0]) == len(fed[1]) == STEPS
  for i, ref in ref_fed.items():
    for k, v in ref.items():
      np.testing.assert_array_equal(
          np.concatenate([fed[0][i][k], fed[1][i][k]]), v, err_msg=k
      )


def test_model_axis_across_processes_matches_one_process(
    mp_dirs, reference, tmp_path
):
  config = "tests/multiprocess/tiny_model_across.py"
  got_dir, probe, _ = _launched(mp_dirs, tmp_path, "run", config=config)
  _same_outcome(reference[0], got_dir, config_differs=("mesh",))
  # 'data' has 2 devices here: each holds half the bank.
  for p in (0, 1):
    _bank_per_device(probe, p, 2)
  # Both processes hold both data shards, so both fed the whole batch.
  ref_fed = runner.fed_rows(reference[1], 0)
  for p in (0, 1):
    fed = runner.fed_rows(probe, p)
    for i, ref in ref_fed.items():
      for k, v in ref.items():
        np.testing.assert_array_equal(fed[i][k], v, err_msg=k)


def _stop_lines(out: str) -> dict[int, int]:
  """{process: step} of the 'Preempted at step S' lines."""
  found = re.findall(r"\[(\d)\] Preempted at step (\d+); rerun to resume", out)
  return {int(p): int(s) for p, s in found}


def _wait_rows(workdir, proc, n):
  """Waits until process 0 has logged `n` train rows."""
  path = os.path.join(workdir, "metrics.jsonl")
  runner.wait_for(path, proc)
  while len(runner.rows(workdir)) < n:
    assert proc.poll() is None, "the run ended before it could be signalled"
    time.sleep(0.05)


def test_preempt_then_kill_then_resume_matches_uninterrupted(
    mp_dirs, two_by_two, tmp_path
):
  """SIGTERM to both processes, then SIGKILL to one, then a clean rerun.

  Every step is checkpointed here, so the agreed stop step has always
  been saved already (the duplicate-save case).
  """
  workdir = str(tmp_path / "run")
  cmd = runner.launcher_cmd(
      2, 2, _args(mp_dirs, workdir, "--config.ckpt.every_steps=1")
  )
  # 1. SIGTERM to process 1, and to process 0 more than a step (0.5 s)
  # later: both still stop at one agreed step, save it once and exit 0.
  proc = runner.start(cmd, n=2, CODIR_TEST_DELAY=0.5)
  _wait_rows(workdir, proc, 1)
  pids = runner.child_pids(proc)
  t0 = time.monotonic()
  runner.kill(pids[1], signal.SIGTERM)
  time.sleep(1.0)
  try:
    runner.kill(pids[0], signal.SIGTERM)
  except ProcessLookupError:
    pass  # Already saved and ended.
  r = runner.finish(proc, t0, timeout=120)
  assert r.rc == 0, r.err[-5000:]
  assert r.wall_s < 60, r.wall_s
  print(f"2 processes: SIGTERM -> all exited 0 in {r.wall_s:.1f} s")
  stops = _stop_lines(r.out)
  assert sorted(stops) == [0, 1] and len(set(stops.values())) == 1, r.out
  stop = stops[0]
  assert 1 <= stop < STEPS - 1  # Room for stage 2's checkpoint.
  assert runner.checkpoints(workdir)[-1] == stop
  assert not os.path.exists(os.path.join(workdir, "summary.json"))
  # 2. Resume, then SIGKILL process 1 after a new checkpoint: the launcher
  # ends process 0 and exits non-zero within its bound.
  proc = runner.start(cmd, n=2, CODIR_TEST_DELAY=0.5)
  runner.wait_for(os.path.join(workdir, "checkpoints", str(stop + 1)), proc)
  pids = runner.child_pids(proc)
  t0 = time.monotonic()
  runner.kill(pids[1])
  r = runner.finish(proc, t0, timeout=120)
  assert r.rc != 0
  assert r.wall_s < launch.GRACE_S + 5, r.wall_s
  print(f"SIGKILL of process 1 -> launcher exited in {r.wall_s:.1f} s")
  assert f"[0] Resumed from step {stop}" in r.out
  assert "[launch] process 1 exited with status 137" in r.err
  last = runner.checkpoints(workdir)[-1]
  assert stop < last < STEPS
  # 3. A clean rerun (saving only at the end) resumes from the last
  # checkpoint and ends exactly as the uninterrupted 2 x 2 run.
  r = runner.run(runner.launcher_cmd(2, 2, _args(mp_dirs, workdir)), n=2)
  assert f"[0] Resumed from step {last}" in r.out
  ref_dir = two_by_two[0]
  assert runner.summary(workdir)["dev"] == runner.summary(ref_dir)["dev"]
  _same_exports(ref_dir, workdir)
  ref_rows = {(r["step"], r["split"]): r for r in runner.rows(ref_dir)}
  got_rows = runner.rows(workdir)
  assert [(r["step"], r["split"]) for r in got_rows] == list(ref_rows)
  for row in got_rows:  # Every window is one step (log.every_steps=1).
    assert row == ref_rows[(row["step"], row["split"])]


def test_single_process_sigterm_saves_the_current_step(
    mp_dirs, reference, tmp_path
):
  """ckpt.every_steps far away: SIGTERM still saves the step it reached."""
  workdir = str(tmp_path / "run")
  cmd = runner.single_cmd(_args(mp_dirs, workdir))  # ckpt.every_steps=1000
  proc = runner.start(cmd, CODIR_TEST_DELAY=0.5)
  _wait_rows(workdir, proc, 2)
  t0 = time.monotonic()
  proc.send_signal(signal.SIGTERM)
  r = runner.finish(proc, t0, timeout=120)
  assert r.rc == 0, r.err[-5000:]
  assert r.wall_s < 60, r.wall_s
  print(f"1 process: SIGTERM -> exited 0 in {r.wall_s:.1f} s")
  stop = int(re.search(r"Preempted at step (\d+); rerun to resume", r.out)[1])
  assert 2 <= stop < STEPS
  assert runner.checkpoints(workdir) == [stop]
  r = runner.run(cmd)
  assert f"Resumed from step {stop}" in r.out
  ref_dir = reference[0]
  assert runner.summary(workdir)["dev"] == runner.summary(ref_dir)["dev"]
  _same_exports(ref_dir, workdir)


def test_predict_on_two_processes_writes_the_single_process_files(
    mp_dirs, reference, tmp_path
):
  """11 test examples, global batch 8: none lost or repeated."""
  student = os.path.join(reference[0], "student")
  predict = ["--config.mode=predict", f"--config.eval.model_path={student}"]
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  runner.run(runner.single_cmd(_args(mp_dirs, one, *predict)))
  runner.run(runner.launcher_cmd(2, 2, _args(mp_dirs, two, *predict)), n=2)
  names = sorted(os.listdir(os.path.join(one, "predictions")))
  assert names == sorted(os.listdir(os.path.join(two, "predictions")))
  for name in names:
    with open(os.path.join(one, "predictions", name)) as a:
      with open(os.path.join(two, "predictions", name)) as b:
        lines = a.read()
        assert b.read() == lines
    assert len(lines.splitlines()) == 1 + 11
