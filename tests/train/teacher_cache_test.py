"""Offline KD (config.teacher.cache_outputs): codir_jax/train/teacher_cache.py.

One tiny CoDIR (bank) run is built twice, without and with the cache, on
36 training examples (the last batch half padding) with buckets (8, 16),
so examples are cached at their own bucket and fed in batches padded to
16. Checked: the cached rows equal the step's teacher forward; a few steps
with the cache equal the steps without (metrics, parameters) and cost
fewer FLOPs; a rebuild is a hit; the fingerprint covers its terms; a
corrupted file is an error that leaves the workdir alone; the config
checks; the batches and position of a restored iterator; and an old
workdir's config (without the keys) still agrees. Programs are compiled
without XLA backend optimisation (compared only with one another).
"""

import dataclasses
import functools
import json
import os
import re
import types

from flax import nnx
import jax
import ml_collections
import numpy as np
import pytest

from codir_jax import sharding
from codir_jax.train import glue_run
from codir_jax.train import loop
from codir_jax.train import recipe
from codir_jax.train import settings
from codir_jax.train import step as step_lib
from codir_jax.train import teacher_cache
from codir_jax.train import trainer
from experiments import runs
from tests.train import assets

_FAST_COMPILE = {"xla_backend_optimization_level": 0}
_STEPS = 3


def _config(dirs, cache_dir, **kw):
  return assets.tiny_config(
      *dirs,
      task__min_bucket=8,
      task__train_limit=36,
      eval__compare_teacher=False,
      teacher__cache_dir=str(cache_dir),
      **kw,
  )


def _mesh():
  return sharding.make_mesh([("data", 1), ("model", 1)], jax.devices()[:1])


def _build(config, workdir):
  return glue_run.build_run(settings.from_config(config), str(workdir), _mesh())


@pytest.fixture(scope="module")
def built(tiny_dirs, tmp_path_factory):
  """Runs without and with the cache (built here), and the configs."""
  root = tmp_path_factory.mktemp("teacher_cache")
  cfg_on = _config(tiny_dirs, root / "cache", teacher__cache_outputs=True)
  cfg_off = _config(tiny_dirs, root / "cache")
  off, data = _build(cfg_off, root / "off")
  on, _ = _build(cfg_on, root / "on")
  path = on.teacher_cache[1]
  with np.load(path) as f:
    cached = types.SimpleNamespace(logits=f["logits"], pooled=f["pooled"])
  return types.SimpleNamespace(
      off=off, on=on, data=data, cfg_on=cfg_on, root=root, cached=cached
  )


def test_cached_outputs_equal_the_teacher_forward(built):
  off, cached = built.off, built.cached
  assert off.teacher_cache == ("off", "") and built.on.teacher_cache[0] == (
      "built"
  )
  fn = jax.jit(
      functools.partial(step_lib.teacher_outputs, off.graphs, obj=off.objective)
  )
  params = nnx.state(off.teacher_model)
  worst, seen, repadded = 0.0, [], 0
  lengths = built.data.train.lengths
  it_off, it_on = off.make_iterator(), built.on.make_iterator()
  for _ in range(it_off.steps_per_epoch):
    b, b_on = next(it_off), next(it_on)
    logits, pooled = jax.device_get(fn(params, sharding.put_batch(b, off.mesh)))
    ok, ids = b["valid"], b["example_ids"][b["valid"]]
    worst = max(
        worst,
        float(np.abs(logits[ok] - cached.logits[ids]).max()),
        float(np.abs(pooled[ok] - cached.pooled[ids]).max()),
    )
    seen += list(ids)
    repadded += int(np.sum(lengths[ids] <= 8)) * (b["input_ids"].shape[1] > 8)
    # The cached run's batches: the same rows plus the outputs (0: padding).
    assert all(np.array_equal(b[k], b_on[k]) for k in b)
    np.testing.assert_array_equal(b_on["t_logits"][ok], cached.logits[ids])
    np.testing.assert_array_equal(b_on["t_pooled"][ok], cached.pooled[ids])
    assert not b_on["t_logits"][~ok].any() and not b_on["t_pooled"][~ok].any()
  print(f"max |cached - per-step teacher| = {worst:.3g}")
  assert sorted(seen) == list(range(36)) and repadded > 0  # Other padding.
  assert (~b["valid"]).sum() == 4  # The last batch has padding rows.
  assert worst <= 1e-5


def _flops(exe) -> float:
  cost = exe.cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost)["flops"])


@pytest.fixture(scope="module")
def stepped(built):
  """{'off'|'on': (metrics per step, final params, FLOPs of a step)}."""
  out = {}
  for name, run in (("off", built.off), ("on", built.on)):
    compiled, it, exes = loop.compile_run(run), run.make_iterator(), {}
    state, rows = compiled.init(), []
    for _ in range(_STEPS):
      args = (state, sharding.put_batch(next(it), run.mesh))
      args += (compiled.teacher_params,)
      shape = args[1]["input_ids"].shape
      if shape not in exes:
        lowered = compiled.train_step.lower(*args)
        exes[shape] = lowered.compile(_FAST_COMPILE)
      state, m = exes[shape](*args)
      rows.append(jax.device_get(m))
    flops = {s: _flops(e) for s, e in exes.items()}
    out[name] = (rows, jax.device_get(state.params), flops)
  return out


def test_steps_with_the_cache_equal_the_steps_without(stepped):
  rows_off, params_off, _ = stepped["off"]
  rows_on, params_on, _ = stepped["on"]
  assert {"kd", "crd"} <= set(rows_off[0])
  for r_off, r_on in zip(rows_off, rows_on):
    assert r_off.keys() == r_on.keys()
    for key, (s, c) in r_off.items():
      want = float(s) / max(float(c), 1.0)
      got = float(r_on[key][0]) / max(float(r_on[key][1]), 1.0)
      assert got == pytest.approx(want, rel=1e-5, abs=1e-7), key
  flat_off = jax.tree_util.tree_leaves_with_path(params_off)
  flat_on = dict(jax.tree_util.tree_leaves_with_path(params_on))
  for path, want in flat_off:
    np.testing.assert_allclose(
        flat_on[path], want, rtol=0, atol=1e-5, err_msg=str(path)
    )


def test_the_cached_step_runs_no_teacher_forward(stepped):
  flops_off, flops_on = stepped["off"][2], stepped["on"][2]
  shape = sorted(set(flops_off) & set(flops_on))[-1]
  off, on = flops_off[shape], flops_on[shape]
  print(f"train step FLOPs at {shape}: {off:.4g} -> {on:.4g} ({on / off:.2f})")
  # Tiny models: a 2-layer teacher forward against a 1-layer student's
  # forward and backward, so the teacher is ~40% of the step.
  assert on < 0.75 * off


def test_a_rebuild_is_a_hit_and_builds_nothing(built, monkeypatch):
  def no_compute(*unused_args, **unused_kwargs):
    raise AssertionError("the cache was hit: nothing is computed")

  monkeypatch.setattr(teacher_cache, "compute", no_compute)
  again, _ = _build(built.cfg_on, built.root / "again")
  assert again.teacher_cache == ("hit", built.on.teacher_cache[1])


def test_the_fingerprint_covers_teacher_data_and_recipe(built):
  data = built.data.train
  params = nnx.state(built.on.teacher_model)
  base = dict(buckets=(8, 16), teacher_layers=(2,), pooling="mean")
  base["dtype"] = "float32"
  nudged = jax.tree.map(lambda x: x, params)
  leaf = jax.tree.leaves(nudged)[-1]
  nudged_leaves = jax.tree.leaves(nudged)
  nudged_leaves[-1] = leaf + 1e-3
  nudged = jax.tree.unflatten(jax.tree.structure(nudged), nudged_leaves)
  ids = data.token_ids.copy()
  ids[3] += 1
  variants = {
      "base": (params, data, {}),
      "teacher": (nudged, data, {}),
      "max_len": (params, dataclasses.replace(data, max_len=32), {}),
      "tokens": (params, dataclasses.replace(data, token_ids=ids), {}),
      "buckets": (params, data, {"buckets": (16,)}),
      "layers": (params, data, {"teacher_layers": (1,)}),
      "pooling": (params, data, {"pooling": "first"}),
      "dtype": (params, data, {"dtype": "bfloat16"}),
  }
  prints = {
      k: teacher_cache.fingerprint(p, d, **{**base, **kw})
      for k, (p, d, kw) in variants.items()
  }
  assert len(set(prints.values())) == len(prints), prints
  assert prints["base"] in built.on.teacher_cache[1]
  # Another teacher: another file, built (not the first one's outputs).
  fn = functools.partial(
      step_lib.teacher_outputs, built.on.graphs, obj=built.on.objective
  )
  other = teacher_cache.load_or_build(
      fn,
      nudged,
      data,
      cache_dir=os.path.dirname(built.on.teacher_cache[1]),
      batch_size=8,
      **base,
  )
  assert other.status == "built" and other.path != built.on.teacher_cache[1]
  assert prints["teacher"] in other.path
  assert not np.array_equal(other.logits, built.cached.logits)


def _tree(root):
  """{relative path: bytes} of every file under `root`."""
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = f.read()
  return out


def test_a_corrupted_file_is_an_error_and_the_workdir_stays(built, tmp_path):
  cfg = ml_collections.ConfigDict(built.cfg_on.to_dict())
  cfg.teacher.cache_dir = str(tmp_path / "cache")
  name = os.path.basename(built.on.teacher_cache[1])
  os.makedirs(cfg.teacher.cache_dir)
  with open(built.on.teacher_cache[1], "rb") as f:
    good = f.read()
  bad = os.path.join(cfg.teacher.cache_dir, name)
  with open(bad, "wb") as f:
    f.write(good[: len(good) // 2])  # A torn copy.
  # A started workdir (config and a checkpoint) of this recipe.
  workdir = tmp_path / "work"
  os.makedirs(workdir / "checkpoints" / "2")
  (workdir / "checkpoints" / "2" / "state").write_bytes(b"checkpoint")
  (workdir / "config.json").write_text(settings.from_config(cfg).config_json)
  before = _tree(workdir)
  with pytest.raises(ValueError, match=re.escape(bad) + ".*Delete it"):
    trainer.train_and_evaluate(cfg, str(workdir))
  assert _tree(workdir) == before


@pytest.mark.parametrize(
    "change, needs",
    [
        ({"mode": "pretrain_distill"}, "per-example constants"),
        ({"mode": "finetune_teacher"}, "without a frozen teacher"),
        ({"mode": "evaluate"}, "trains nothing"),
        ({"mode": "predict"}, "trains nothing"),
        (
            {"loss.kd_weight": 0.0, "loss.crd_weight": 0.0},
            "no loss term reads the teacher",
        ),
        ({"teacher.cache_outputs": "yes"}, "need True or False"),
        ({"teacher.cache_dir": 3}, "config.teacher.cache_dir = 3"),
    ],
)
def test_config_errors(tiny_dirs, tmp_path, change, needs):
  d = _config(tiny_dirs, tmp_path, teacher__cache_outputs=True).to_dict()
  for key, value in change.items():
    group, _, name = key.rpartition(".")
    (d[group] if group else d)[name] = value
  with pytest.raises(ValueError, match="config.teacher.cache_"):
    settings.from_config(ml_collections.ConfigDict(d))
  with pytest.raises(ValueError, match=re.escape(needs)):
    settings.from_config(ml_collections.ConfigDict(d))


def test_demo_default_dir_and_old_workdirs(tiny_dirs, tmp_path, monkeypatch):
  cfg = _config(tiny_dirs, "", teacher__cache_outputs=True, mode="demo")
  settings.from_config(cfg)  # The demo's distill stage uses the cache.
  teacher_stage, _ = settings.demo_stages(cfg, str(tmp_path))
  assert settings.from_config(teacher_stage).models.teacher_cache is False
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  want = os.path.join(str(tmp_path), "codir_jax", "teacher_outputs")
  assert teacher_cache.resolve_dir("") == want
  # A config.json written before the keys existed agrees with a config
  # that turns the cache on (trainer resume and experiments/ finished runs).
  new = json.loads(settings.from_config(cfg).config_json)
  old = json.loads(json.dumps(new))
  del old["teacher"]["cache_outputs"], old["teacher"]["cache_dir"]
  assert new["teacher"]["cache_outputs"] is True
  defaults = settings.base_defaults()
  assert not recipe.differences(old, new, defaults=defaults)
  assert not runs.config_differences(old, new)
  old["teacher"]["shard_params"] = True  # Still sees real differences.
  new["task"]["max_len"] = 32
  assert runs.config_differences(old, new) == [
      "task.max_len",
      "teacher.shard_params",
  ]


def test_a_restored_iterator_yields_the_same_cached_batches(built):
  it = built.on.make_iterator()
  for _ in range(7):  # Into the second epoch (5 steps each).
    next(it)
  position = it.get_state()
  want = [next(it) for _ in range(2)]
  again = built.on.make_iterator()
  again.set_state(position)
  for w, g in zip(want, [next(again) for _ in range(2)]):
    assert w.keys() == g.keys() and "t_pooled" in g
    assert all(np.array_equal(w[k], g[k]) for k in w)
