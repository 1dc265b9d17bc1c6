"""CoDIR-Pre on 2 processes x 2 devices against 1 process x 4 devices.

Each process tokenises its own share of the corpus (every text segment
exactly once across the processes) and the global batches are those of the
single process, so the runs agree.
"""

import collections
import json
import os

import numpy as np
import pytest

from tests.multiprocess import runner

pytestmark = pytest.mark.multiprocess


def _args(d, workdir):
  return [
      "--config=configs/pretrain_codir.py",
      f"--workdir={workdir}",
      f"--config.teacher.path={d['mlm']}",
      f"--config.pretrain.train_files=('{d['corpus']}',)",
      f"--config.pretrain.eval_files=('{d['heldout']}',)",
      "--config.pretrain.eval_batches=2",
      "--config.task.max_len=16",
      "--config.teacher.dtype=float32",
      "--config.student.dtype=float32",
      "--config.student.layers=(2,)",
      "--config.loss.proj_dim=16",
      "--config.optim.batch_size=8",
      "--config.optim.lr=1e-3",
      "--config.optim.num_steps=4",
      "--config.ckpt.every_steps=100",
      "--config.ckpt.async_save=false",
      "--config.log.every_steps=1",
      "--config.log.eval_every_steps=0",
      "--config.log.tensorboard=false",
  ]


def _encoded(probe, process):
  with open(os.path.join(probe, f"encoded_{process}.json")) as f:
    return json.load(f)


def test_pretrain_two_processes_read_disjoint_shares_and_agree(
    mlm_dirs, tmp_path
):
  ref_dir, ref_probe = str(tmp_path / "one"), str(tmp_path / "one_probe")
  got_dir, got_probe = str(tmp_path / "two"), str(tmp_path / "two_probe")
  os.makedirs(ref_probe)
  os.makedirs(got_probe)
  # XLA's default optimisation (xla=()): KD here is ~3e-4, a difference
  # of near-equal terms, and at runner.FAST_COMPILE the 2-process run's
  # rounding moves it by ~2e-7, over its 1e-7 absolute tolerance.
  runner.run(
      runner.single_cmd(_args(mlm_dirs, ref_dir)),
      xla=(),
      CODIR_TEST_PROBE=ref_probe,
  )
  runner.run(
      runner.launcher_cmd(2, 2, _args(mlm_dirs, got_dir)),
      n=2,
      xla=(),
      CODIR_TEST_PROBE=got_probe,
  )
  # Disjoint reading: every segment the single process tokenised was
  # tokenised by exactly one of the two, and each did a real share.
  every = collections.Counter(_encoded(ref_probe, 0))
  shares = [collections.Counter(_encoded(got_probe, p)) for p in (0, 1)]
  assert shares[0] + shares[1] == every
  for share in shares:
    assert 0.3 < sum(share.values()) / sum(every.values()) < 0.7
  # The agreed batches: process 0's rows then process 1's are the single
  # process's global batch, step by step.
  ref_fed = runner.fed_rows(ref_probe, 0)
  fed = [runner.fed_rows(got_probe, p) for p in (0, 1)]
  assert len(ref_fed) == len(fed[0]) == len(fed[1]) == 4
  for i, ref in ref_fed.items():
    for k, v in ref.items():
      np.testing.assert_array_equal(
          np.concatenate([fed[0][i][k], fed[1][i][k]]), v, err_msg=(i, k)
      )
  # Same metrics and student. The student starts as a copy of teacher
  # layers, so KD is ~1e-4 here: 1e-7 absolute covers its float noise.
  ref_rows, got_rows = runner.rows(ref_dir), runner.rows(got_dir)
  assert [(r["step"], r["split"]) for r in got_rows] == [
      (r["step"], r["split"]) for r in ref_rows
  ]
  for ref, got in zip(ref_rows, got_rows):
    for k, v in ref.items():
      if k != "split":
        np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-7, err_msg=k)
  ref_sum, got_sum = runner.summary(ref_dir), runner.summary(got_dir)
  for k in ("dev", "teacher_dev"):
    assert sorted(got_sum[k]) == sorted(ref_sum[k])
    for m, v in ref_sum[k].items():
      np.testing.assert_allclose(
          got_sum[k][m], v, rtol=1e-5, atol=1e-7, err_msg=(k, m)
      )
  ref_w = runner.weights(os.path.join(ref_dir, "student"))
  got_w = runner.weights(os.path.join(got_dir, "student"))
  for k in ref_w:
    np.testing.assert_allclose(got_w[k], ref_w[k], rtol=1e-5, atol=1e-7)
