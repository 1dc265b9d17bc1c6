"""Clear errors of a multi-process run, each naming its cause.

The config checks run in this process; the others start real processes.
"""

import sys
import time

import pytest

from codir_jax import distributed
from codir_jax import launch
from codir_jax.train import settings
from tests.multiprocess import runner
from tests.train import assets


@pytest.mark.parametrize(
    "overrides, named",
    [
        (dict(initialize=True, num_processes=2, process_id=2), "process_id"),
        (dict(initialize=True, num_processes=-1), "num_processes"),
        (dict(initialize=True, coordinator_address="host"), "coordinator_"),
        (dict(coordinator_address="10.0.0.1:1234"), "initialize = True"),
        (dict(initialize=True, cpu_collectives="mpi"), "cpu_collectives"),
    ],
)
def test_bad_distributed_config_is_refused_naming_the_key(overrides, named):
  c = assets.tiny_config("teacher", "data")
  for k, v in overrides.items():
    c.distributed[k] = v
  with pytest.raises(ValueError, match=r"config\.distributed\.") as e:
    settings.from_config(c)
  assert named in str(e.value)


def _main_args(d, workdir, *extra):
  return [
      sys.executable,
      "-m",
      "codir_jax.main",
      "--config=configs/tiny.py",
      f"--workdir={workdir}",
      f"--config.teacher.path={d['teacher']}",
      f"--config.task.data_dir={d['glue']}",
  ] + list(extra)


def _dist(n, i, port, *extra):
  return [
      "--config.distributed.initialize=true",
      f"--config.distributed.coordinator_address=127.0.0.1:{port}",
      f"--config.distributed.num_processes={n}",
      f"--config.distributed.process_id={i}",
  ] + list(extra)


@pytest.mark.multiprocess
def test_unreachable_coordinator_times_out_naming_address(mp_dirs, tmp_path):
  port = launch.free_port()  # Nothing listens there.
  cmd = _main_args(mp_dirs, str(tmp_path), *_dist(2, 1, port))
  r = runner.run(cmd, ok=False, **{distributed.TIMEOUT_ENV: 3})
  assert r.rc == 1, r.err[-3000:]
  assert f"could not reach the coordinator at 127.0.0.1:{port}" in r.err
  assert "within 3 s" in r.err
  assert r.wall_s < 60


@pytest.mark.multiprocess
def test_a_missing_process_times_out_naming_the_coordinator(mp_dirs, tmp_path):
  port = launch.free_port()
  cmd = _main_args(mp_dirs, str(tmp_path), *_dist(2, 0, port))
  r = runner.run(cmd, ok=False, **{distributed.TIMEOUT_ENV: 3})
  assert r.rc == 1, r.err[-3000:]
  assert "the JAX cluster did not form within 3 s" in r.err
  assert f"coordinator 127.0.0.1:{port}" in r.err
  assert "not all 2 processes registered" in r.err


@pytest.mark.multiprocess
def test_mismatched_num_processes_stops_every_process(mp_dirs, tmp_path):
  port = launch.free_port()
  procs = [
      runner.start(
          _main_args(mp_dirs, str(tmp_path), *_dist(n, i, port)), devices=1
      )
      for i, n in enumerate((2, 3))
  ]
  t0 = time.monotonic()
  for p in procs:
    r = runner.finish(p, t0, timeout=300)
    assert r.rc == 1, r.err[-3000:]
    assert "cluster of 2 processes" in r.err, r.err[-3000:]
    assert "process 1 has num_processes=3" in r.err
  assert r.wall_s < 120


@pytest.mark.multiprocess
@pytest.mark.parametrize(
    "flag, message",
    [
        (
            "--config.optim.batch_size=6",
            "global batch size 6 (config.optim.batch_size) is not divisible"
            " by the 4 devices of the mesh's 'data' axis",
        ),
        (
            # 3 training examples, 4 rows per process: process 1 would
            # feed none.
            "--config.task.train_limit=3",
            "the processes feeding slices 1..1 of each global batch would"
            " get no row of the training set",
        ),
    ],
)
def test_a_launched_run_refuses_a_bad_split_naming_it(
    mp_dirs, tmp_path, flag, message
):
  """A batch not divisible by the global devices; a process whose slice of
  the training set is empty.

  The first process to fail ends the run: a slower one may be stopped (by
  JAX's coordination service or the launcher) before it reports, so every
  error reported must be `message`.
  """
  args = _main_args(mp_dirs, str(tmp_path), flag)[3:]
  cmd = runner.launcher_cmd(2, 2, args, module="codir_jax.main")
  r = runner.run(cmd, n=2, ok=False)
  assert r.rc == 1, r.err[-3000:]
  found = [l for l in r.err.splitlines() if "codir_jax: error" in l]
  assert found, r.err[-3000:]
  for line in found:
    assert message in line, line
  assert r.wall_s < 120
