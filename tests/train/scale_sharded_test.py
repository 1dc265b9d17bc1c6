"""Scale knobs on a 4-device mesh: teacher FSDP, accumulation layout.

- `teacher.shard_params`: the same losses and parameters as the replicated
  teacher (CoDIR with a bank, 2 steps), while each device holds 1/4 of the
  teacher's bytes (data = 4; the replicated teacher is whole on every
  device); on a (data 2, model 2) mesh every matrix is split over 'data',
  the layers' matrices over 'model' too.
- `optim.grad_accum_steps` with the batch over 4 devices (each micro-batch
  takes a slice of every device's rows): KD equals one large batch.
"""

from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P
import pytest

from codir_jax import sharding
from tests import multidevice

_SCRIPT = r"""
import json, os, tempfile
import numpy as np
import jax
from codir_jax import sharding
from codir_jax.train import glue_run, loop, settings
from tests.train import assets

tmp = tempfile.mkdtemp()
teacher = assets.make_teacher_dir(os.path.join(tmp, "teacher"), dropout=0.0,
                                  head_std=1.0)
data = assets.make_glue_dir(os.path.join(tmp, "glue"))


def compiled(name, axes, arg, **kw):
  config = assets.tiny_config(teacher, data, arg, **kw)
  mesh = sharding.make_mesh(axes)
  run, _ = glue_run.build_run(settings.from_config(config),
                              os.path.join(tmp, name), mesh)
  return run, loop.compile_run(run)


def device_bytes(c):
  leaves = jax.tree.leaves(c.teacher_params)
  per_device = [sum(s.data.nbytes for x in leaves for s in x.addressable_shards
                    if s.device == d) for d in jax.devices()]
  return per_device, sum(x.nbytes for x in leaves)


def train(run, c, steps=2, padding=()):
  it, state, rows = run.make_iterator(), c.init(), []
  for _ in range(steps):
    b = dict(next(it))
    valid = np.array(b["valid"])
    valid[list(padding)] = False
    b["valid"] = valid
    batch = sharding.put_batch(b, run.mesh)
    state, m = c.train_step(state, batch, c.teacher_params)
    rows.append({k: [float(v[0]), float(v[1])]
                 for k, v in jax.device_get(m).items()})
  flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
          jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))}
  return rows, flat


def assert_same(a, b, what):
  rows_a, params_a = a
  rows_b, params_b = b
  for ra, rb in zip(rows_a, rows_b):
    assert ra.keys() == rb.keys()
    for k in ra:
      np.testing.assert_allclose(ra[k], rb[k], rtol=1e-5, atol=1e-6,
                                 err_msg=f"{what} {k}")
  worst = max(float(np.max(np.abs(params_a[k] - params_b[k])))
              for k in params_a)
  assert worst < 1e-5, (what, worst)
  return worst


data4 = [("data", 4), ("model", 1)]
figures = {}
run, plain = compiled("plain", data4, "variant=codir")
_, fsdp = compiled("fsdp", data4, "variant=codir", teacher__shard_params=True)
for name, c in (("replicated", plain), ("fsdp_data4", fsdp)):
  per_device, total = device_bytes(c)
  figures[name] = {"per_device": per_device, "total": total}
# The replicated teacher is whole on every device; sharded, each holds 1/4
# (up to the 2-float classifier bias, which does not divide by 4).
assert figures["replicated"]["per_device"] == [total] * 4, figures
assert all(4 * b <= total + 3 * 8 for b in figures["fsdp_data4"]["per_device"])
worst = assert_same(train(run, plain), train(run, fsdp), "fsdp")
print("fsdp max |dparam|", worst)

# (data 2, model 2): the logical 'model' rules plus 'data' on another dim.
_, mixed = compiled("mixed", [("data", 2), ("model", 2)], "variant=codir",
                    teacher__shard_params=True)
per_device, _ = device_bytes(mixed)
figures["fsdp_data2_model2"] = {"per_device": per_device, "total": total}
assert all(2 * b <= total for b in per_device), per_device
specs = [x.sharding.spec for x in jax.tree.leaves(mixed.teacher_params)
         if x.ndim == 2]
assert all("data" in s for s in specs), specs
# Q, K, V, attention output, FFN in and out of 2 layers: model and data.
assert sum(set(s) == {"data", "model"} for s in specs) >= 12, specs

# Accumulation with the batch spread over 4 devices; padding rows too.
run, one = compiled("kd1", data4, "variant=kd")
_, two = compiled("kd2", data4, "variant=kd", optim__grad_accum_steps=2)
worst = assert_same(train(run, one, padding=(2, 3, 6)),
                    train(run, two, padding=(2, 3, 6)), "accum")
print("accum max |dparam|", worst)
print("FIGURES " + json.dumps(figures))
print("OK")
"""


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


@pytest.mark.slow  # A 4-device subprocess, five train-step compiles.
def test_teacher_sharding_and_accumulation_on_4_devices():
  out = multidevice.run_script(_SCRIPT, n_devices=4)
  assert "OK" in out, out
  line = next(l for l in out.splitlines() if l.startswith("FIGURES "))
  print(line)  # Per-device teacher bytes (pytest -s shows them).
