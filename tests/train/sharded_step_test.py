"""Training on one device equals training on 8-device meshes."""

from tests import multidevice

_SCRIPT = r"""
import json, os, tempfile
import numpy as np
import jax
from flax import nnx
from codir_jax import sharding
from codir_jax.train import glue_run, loop, settings, state as state_lib
from tests.train import assets

tmp = tempfile.mkdtemp()
teacher = assets.make_teacher_dir(os.path.join(tmp, "teacher"))
data = assets.make_glue_dir(os.path.join(tmp, "glue"))
# A global batch that does not split over the devices is refused up front.
from codir_jax.train import trainer
bad = assets.tiny_config(teacher, data, optim__batch_size=6)
try:
  trainer.train_and_evaluate(bad, os.path.join(tmp, "bad"))
  raise AssertionError("batch 6 on 8 devices was accepted")
except ValueError as e:
  assert "batch size 6" in str(e) and "8 devices" in str(e), e
assert not os.path.exists(os.path.join(tmp, "bad"))

meshes = {
    "one": ([("data", 1), ("model", 1)], jax.devices()[:1]),
    "data8": ([("data", 8), ("model", 1)], None),
    "data4_model2": ([("data", 4), ("model", 2)], None),
}
out = {}
for name, (axes, devices) in meshes.items():
  config = assets.tiny_config(teacher, data, optim__num_steps=3,
                              log__every_steps=1, ckpt__every_steps=100)
  mesh = sharding.make_mesh(axes, devices)
  run, _ = glue_run.build_run(settings.from_config(config),
                              os.path.join(tmp, name), mesh)
  if name == "data4_model2":
    specs = state_lib.param_specs(run.params, mesh, run.rules)
    leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(
        x, jax.sharding.PartitionSpec))
    assert any("model" in tuple(s) for s in leaves), leaves
  result = loop.fit(run)
  rows = [json.loads(l) for l in open(os.path.join(tmp, name,
                                                   "metrics.jsonl"))]
  losses = [r["loss"] for r in rows if r["split"] == "train"]
  params = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
            jax.tree_util.tree_leaves_with_path(nnx.state(result.model))}
  out[name] = (losses, params, result.final_eval)

ref_losses, ref_params, ref_eval = out["one"]
assert len(ref_losses) == 3
for name in ("data8", "data4_model2"):
  losses, params, final = out[name]
  np.testing.assert_allclose(losses, ref_losses, rtol=0, atol=1e-5,
                             err_msg=name)
  assert params.keys() == ref_params.keys()
  worst = max(float(np.max(np.abs(params[k] - ref_params[k])))
              for k in params)
  assert worst < 1e-5, (name, worst)
  print(name, "max |dparam|", worst, "losses", losses)
# The steps changed the loss, so equal losses are not a vacuous match.
assert len(set(ref_losses)) == 3, ref_losses
print("OK")
"""


def test_three_steps_same_on_1_and_8_devices():
  out = multidevice.run_script(_SCRIPT, n_devices=8)
  assert "OK" in out
  assert "data8 max |dparam|" in out and "data4_model2 max |dparam|" in out
