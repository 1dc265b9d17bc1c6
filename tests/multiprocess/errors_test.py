"""Clear errors of a multi-process run, each naming its cause.

The config checks run in this process; the others start real processes.
"""

import subprocess
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
      subprocess.Popen(
          _main_args(mp_dirs, str(tmp_path), *_dist(n, i, port)),
          cwd=runner.REPO,
          env=runner.env(XLA_FLAGS="--xla_force_host_platform_device_count=1"),
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
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


def _launch_error(d, tmp_path, *extra):
  cmd = runner.launcher_cmd(2, 2, _main_args(d, str(tmp_path))[3:])
  cmd[cmd.index("--module=tests.multiprocess.child")] = (
      "--module=codir_jax.main"
  )
  r = runner.run(cmd + list(extra), n=2, ok=False)
  assert r.rc == 1, r.err[-3000:]
  return r


def _only_error(r, message):
  """`message` from a process; no process reported another error.

  The first process to fail ends the run: a slower one may be stopped
  (by JAX's coordination service or the launcher) before it reports.
  """
  found = [l for l in r.err.splitlines() if "codir_jax: error" in l]
  assert found, r.err[-3000:]
  for line in found:
    assert message in line, line


@pytest.mark.multiprocess
def test_batch_not_divisible_by_the_global_devices(mp_dirs, tmp_path):
  r = _launch_error(mp_dirs, tmp_path, "--config.optim.batch_size=6")
  _only_error(
      r,
      "global batch size 6 (config.optim.batch_size) is not divisible by"
      " the 4 devices of the mesh's 'data' axis",
  )
  assert r.wall_s < 120


@pytest.mark.multiprocess
def test_a_process_with_an_empty_slice_is_refused(mp_dirs, tmp_path):
  # 3 training examples, 4 rows per process: process 1 would feed none.
  r = _launch_error(mp_dirs, tmp_path, "--config.task.train_limit=3")
  _only_error(
      r,
      "the processes feeding slices 1..1 of each global batch would get no"
      " row of the training set",
  )
  assert r.wall_s < 120
