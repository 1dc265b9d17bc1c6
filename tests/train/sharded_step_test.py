"""Training on one device equals training on multi-device meshes.

One subprocess with 8 fake CPU devices (tests/multidevice.py) runs every
check below once and reports each one's outcome; a test per check reads
the report:

- three CoDIR steps (memory bank, dropout on) give the same metrics,
  parameters and optimizer state on 1 device, on ('data', 8) with the
  frozen teacher split over 'data' (`teacher.shard_params`) and on
  ('data', 4) x ('model', 2) with it replicated: each mesh and each
  teacher layout is compared with 1 device;
- the split teacher: each device holds 1/8 of its bytes (replicated, it is
  whole on every device); on ('data', 2) x ('model', 2) every matrix is
  split over 'data', the layers' matrices over 'model' too;
- `optim.grad_accum_steps` with the batch spread over 4 devices (each
  micro-batch takes a slice of every device's rows): PKD (task, KD and PKD
  terms) equals one large batch, with padding rows that leave one
  micro-batch and one device without a valid row;
- a global batch that does not split over the devices is refused up front.
"""

import json
import os

from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P
import pytest

from codir_jax import sharding
from tests import multidevice

_SCRIPT = r"""
import json, os, tempfile, time, traceback
import numpy as np
import jax
from codir_jax import sharding
from codir_jax.train import glue_run, loop, settings, state as state_lib
from codir_jax.train import trainer
from tests.train import assets

tmp = tempfile.mkdtemp()
# head_std: confident teacher logits, so KD is far from 0.
teacher = assets.make_teacher_dir(os.path.join(tmp, "teacher"), head_std=1.0)
data = assets.make_glue_dir(os.path.join(tmp, "glue"))
devices = jax.devices()
report = {}


def check(name, fn):
  # Records fn()'s figures, or the failure, under `name`; and its CPU time.
  t0, entry = time.process_time(), {"error": None, "figures": None}
  try:
    entry["figures"] = fn()
  except Exception:
    entry["error"] = traceback.format_exc()[-3000:]
  report[name] = dict(entry, cpu_s=round(time.process_time() - t0, 1))


def compiled(name, axes, n, teacher_dir=teacher, arg=None, **kw):
  config = assets.tiny_config(teacher_dir, data, arg, **kw)
  mesh = sharding.make_mesh(axes, devices[:n])
  run, _ = glue_run.build_run(settings.from_config(config),
                              os.path.join(tmp, name), mesh)
  return run, loop.compile_run(run)


def train(run, c, steps, padding=()):
  # Per-step metrics; parameters and optimizer state after the last step.
  it, state, rows = run.make_iterator(), c.init(), []
  for _ in range(steps):
    b = dict(next(it))
    b["valid"] = np.array(b["valid"])
    b["valid"][list(padding)] = False
    state, m = c.train_step(state, sharding.put_batch(b, run.mesh),
                            c.teacher_params)
    rows.append(jax.device_get(m))
  flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
          jax.tree_util.tree_leaves_with_path(
              jax.device_get((state.params, state.opt_state)))}
  return rows, flat


def assert_same(got, want):
  (rows_g, flat_g), (rows_w, flat_w) = got, want
  assert len(rows_g) == len(rows_w)
  for step, (rg, rw) in enumerate(zip(rows_g, rows_w)):
    assert rg.keys() == rw.keys()
    for k in rw:
      np.testing.assert_allclose(rg[k], rw[k], rtol=1e-5, atol=1e-6,
                                 err_msg=f"step {step} {k}")
  assert flat_g.keys() == flat_w.keys()
  worst = max(float(np.max(np.abs(flat_g[k] - flat_w[k]), initial=0.0))
              for k in flat_w)
  assert worst < 1e-5, worst
  return {"max_dparam": worst,
          "losses": [float(r["loss"][0]) for r in rows_g]}


def device_bytes(c, n):
  leaves = jax.tree.leaves(c.teacher_params)
  per_device = [sum(s.data.nbytes for x in leaves for s in x.addressable_shards
                    if s.device == d) for d in devices[:n]]
  return per_device, sum(x.nbytes for x in leaves)


def batch_refused():
  bad = assets.tiny_config(teacher, data, optim__batch_size=6)
  try:
    trainer.train_and_evaluate(bad, os.path.join(tmp, "bad"))
    raise AssertionError("batch 6 on 8 devices was accepted")
  except ValueError as e:
    assert "batch size 6" in str(e) and "8 devices" in str(e), e
  assert not os.path.exists(os.path.join(tmp, "bad"))


check("batch_refused", batch_refused)
results = {}


def three_steps(name, axes, **kw):
  def fn():
    run, c = compiled(name, axes, 1 if name == "one" else 8, **kw)
    if name == "data4_model2":
      specs = state_lib.param_specs(run.params, run.mesh, run.rules)
      leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(
          x, jax.sharding.PartitionSpec))
      assert any("model" in tuple(s) for s in leaves), leaves
    results[name] = train(run, c, 3)
    if name == "one":
      losses = [float(r["loss"][0]) for r in results[name][0]]
      # The steps changed the loss: equal losses are not a vacuous match.
      assert len(set(losses)) == 3, losses
      return {"losses": losses}
    figures = assert_same(results[name], results["one"])
    figures["per_device"], figures["total"] = device_bytes(c, 8)
    return figures
  check(name, fn)


three_steps("one", [("data", 1), ("model", 1)])
three_steps("data8_split_teacher", [("data", 8), ("model", 1)],
            teacher__shard_params=True)
three_steps("data4_model2", [("data", 4), ("model", 2)])


def teacher_bytes():
  replicated = report["data4_model2"]["figures"]
  split = report["data8_split_teacher"]["figures"]
  total = replicated["total"]
  assert replicated["per_device"] == [total] * 8, replicated
  # Each device holds 1/8 (up to the 2-float classifier bias, which does
  # not divide by 8).
  assert split["total"] == total, split
  assert all(8 * b <= total + 7 * 8 for b in split["per_device"]), split
  return {"replicated": total, "split": split["per_device"]}


check("teacher_bytes", teacher_bytes)


def split_teacher_data2_model2():
  # The logical 'model' rules plus 'data' on another dimension.
  _, mixed = compiled("mixed", [("data", 2), ("model", 2)], 4,
                      teacher__shard_params=True)
  per_device, total = device_bytes(mixed, 4)
  assert all(2 * b <= total for b in per_device), per_device
  specs = [x.sharding.spec for x in jax.tree.leaves(mixed.teacher_params)
           if x.ndim == 2]
  assert all("data" in s for s in specs), specs
  # Q, K, V, attention output, FFN in and out of 2 layers: model and data.
  assert sum(set(s) == {"data", "model"} for s in specs) >= 12, specs
  return {"per_device": per_device, "total": total}


check("split_teacher_data2_model2", split_teacher_data2_model2)


def accumulation():
  # Rows (2 per device) 1, 2, 3, 5, 7 not valid: device 1 holds none, and
  # micro-batch 1 (rows 1, 3, 5, 7: a slice of every device's) none.
  still = assets.make_teacher_dir(os.path.join(tmp, "still"), dropout=0.0,
                                  head_std=1.0)
  padding, data4 = (1, 2, 3, 5, 7), [("data", 4), ("model", 1)]
  run, one = compiled("pkd1", data4, 4, still, "variant=pkd")
  _, two = compiled("pkd2", data4, 4, still, "variant=pkd",
                    optim__grad_accum_steps=2)
  want = train(run, one, 2, padding)
  assert want[0][0]["task"][1] == 8 - len(padding)  # Padding is excluded.
  assert {"kd", "pkd"} <= set(want[0][0]), want[0][0].keys()
  return assert_same(train(run, two, 2, padding), want)


check("accumulation", accumulation)
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def report():
  # Without XLA's backend (LLVM) optimisation the programs compile in about
  # half the time; the script compares them only with one another.
  flags = (
      os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
  )
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("XLA_FLAGS", flags.strip())
    out = multidevice.run_script(_SCRIPT, n_devices=8)
  line = next(l for l in out.splitlines() if l.startswith("REPORT "))
  return json.loads(line[len("REPORT ") :])


def _passed(report, name):
  entry = report[name]
  assert entry["error"] is None, f"{name}:\n{entry['error']}"
  print(name, entry["cpu_s"], "s CPU", entry["figures"])  # pytest -s
  return entry["figures"]


@pytest.mark.slow  # An 8-device subprocess: five train-step compiles.
def test_three_steps_same_on_1_and_8_devices(report):
  _passed(report, "one")
  for name in ("data8_split_teacher", "data4_model2"):
    assert _passed(report, name)["max_dparam"] < 1e-5


@pytest.mark.slow
def test_teacher_split_over_data_holds_1_over_n_of_its_bytes(report):
  _passed(report, "teacher_bytes")
  _passed(report, "split_teacher_data2_model2")


@pytest.mark.slow
def test_accumulation_over_4_devices_equals_one_large_batch(report):
  assert _passed(report, "accumulation")["max_dparam"] < 1e-5


@pytest.mark.slow
def test_batch_that_does_not_split_over_the_devices_is_refused(report):
  _passed(report, "batch_refused")


def test_fsdp_spec_adds_data_on_the_largest_free_dimension():
  mesh = AbstractMesh((4, 2), ("data", "model"))
  assert sharding.fsdp_spec(P(), (64, 32), mesh) == P("data", None)
  assert sharding.fsdp_spec(P(), (30, 32), mesh) == P(None, "data")
  assert sharding.fsdp_spec(P(None, "model"), (32, 64), mesh) == P(
      "data", "model"
  )
  assert sharding.fsdp_spec(P(), (2,), mesh) == P()  # Does not divide.
  assert sharding.fsdp_spec(P("data"), (32,), mesh) == P("data")
  assert sharding.fsdp_spec(P("model"), (32,), mesh) == P("model")
  # A size-1 'model' axis (a data-only run) does not hold a dimension.
  data_only = AbstractMesh((4, 1), ("data", "model"))
  assert sharding.fsdp_spec(P("model"), (32,), data_only) == P("data")
  assert sharding.fsdp_spec(P(None, "model"), (8, 64), data_only) == P(
      None, "data"
  )
  one = AbstractMesh((1, 2), ("data", "model"))
  assert sharding.fsdp_spec(P(), (64, 32), one) == P()
