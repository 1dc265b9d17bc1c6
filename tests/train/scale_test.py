"""Scale knobs against the plain step: remat and gradient accumulation.

- `student.remat`: the encoder's loss and gradients, with dropout on, equal
  the plain ones for every policy, and the policy is really in the traced
  program; one train step with remat equals the plain step.
- `optim.grad_accum_steps`: for KD and PKD one step over micro-batches
  equals one step over the whole batch, with padding rows spread unevenly
  (one micro-batch has none valid); for CoDIR with a memory bank it equals
  the plain step run on each micro-batch in order (bank threaded through,
  parameters held), their gradients weighted by valid rows and applied
  once (codir_jax/train/accumulate.py).
Teacher parameter sharding needs several devices: scale_sharded_test.py.
"""

import copy

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from codir_jax import models
from codir_jax import sharding
from codir_jax.models import remat
from codir_jax.train import glue_run
from codir_jax.train import loop
from codir_jax.train import optimizer
from codir_jax.train import recipe
from codir_jax.train import settings
from codir_jax.train import step as step_lib
from tests import builders
from tests.train import assets

# Rows with valid = False: micro-batch 1 of 4 (rows 2, 3) has none valid.
_PADDING = (2, 3, 6)


@pytest.fixture(scope="module")
def no_dropout_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("scale")
  teacher = assets.make_teacher_dir(
      str(root / "teacher"), dropout=0.0, head_std=1.0
  )
  return teacher, assets.make_glue_dir(str(root / "glue")), root


def _compiled(dirs, name, arg, **kw):
  teacher, data, root = dirs
  config = assets.tiny_config(teacher, data, arg, **kw)
  mesh = sharding.make_mesh([("data", 1), ("model", 1)], jax.devices()[:1])
  run, _ = glue_run.build_run(
      settings.from_config(config), str(root / name), mesh
  )
  return run, loop.compile_run(run)


def _batches(run, n, padding=()):
  it = run.make_iterator()
  out = []
  for _ in range(n):
    b = dict(next(it))
    valid = np.array(b["valid"])
    valid[list(padding)] = False
    b["valid"] = valid
    out.append(sharding.put_batch(b, run.mesh))
  return out


def _train(compiled, batches):
  state, rows = compiled.init(), []
  for b in batches:
    state, m = compiled.train_step(state, b, compiled.teacher_params)
    rows.append(jax.device_get(m))
  return state, rows


def _flat(tree):
  return {
      jax.tree_util.keystr(k): np.asarray(v)
      for k, v in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))
  }


def _assert_close(got, want, tol=1e-5):
  """Every leaf within tol x max(1, its largest |value|)."""
  got, want = _flat(got), _flat(want)
  assert got.keys() == want.keys()
  for k in want:
    scale = max(1.0, float(np.max(np.abs(want[k]), initial=0.0)))
    np.testing.assert_allclose(
        got[k], want[k], rtol=0, atol=tol * scale, err_msg=k
    )


# ----------------------------------------------------------------------------
# Remat.


@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch"])
def test_remat_encoder_same_loss_and_gradients(policy):
  config = builders.tiny_config(hidden_dropout=0.2, attention_dropout=0.2)
  model = builders.randomize(
      models.SequenceClassifier(config, 3, rngs=nnx.Rngs(0))
  )
  graphdef, params = nnx.split(model)
  batch = builders.padded_batch(config)
  key = jax.random.key(3)

  def loss(p, name):
    m = nnx.merge(graphdef, p)
    m.encoder.remat = name
    logits, out = m(
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
        deterministic=False,
        dropout_rng=key,
    )
    return jnp.mean(logits**2) + jnp.mean(out.hidden_states[1] ** 2)

  grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  (want, want_g), (got, got_g) = grad(params, ""), grad(params, policy)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  _assert_close(got_g, want_g)
  # The policy is in the program (and absent without it).
  jaxpr = jax.make_jaxpr(grad, static_argnums=1)
  fn = remat.POLICIES[policy]  # A function, or a DotsSaveable object.
  name = getattr(fn, "__name__", None)
  want_policy = "policy=" + (f"<function {name} " if name else repr(fn))
  assert str(jaxpr(params, policy)).count(want_policy) == config.num_layers
  assert "remat" not in str(jaxpr(params, ""))


@pytest.mark.slow  # Two train-step compiles.
def test_remat_train_step_same_as_plain(tiny_dirs, tmp_path):
  """With dropout on (the tiny teacher's 0.1): replayed masks are equal."""
  dirs = (*tiny_dirs, tmp_path)
  run, plain = _compiled(dirs, "plain", "variant=codir")
  _, remat = _compiled(dirs, "remat", "variant=codir", student__remat="full")
  batches = _batches(run, 2)
  (want, want_m), (got, got_m) = _train(plain, batches), _train(remat, batches)
  _assert_close(got_m, want_m)
  _assert_close(got.params, want.params)
  _assert_close(got.bank, want.bank)


def test_unknown_remat_policy_is_refused(tiny_dirs):
  config = assets.tiny_config(*tiny_dirs, student__remat="dot")
  with pytest.raises(ValueError, match="config.student.remat = 'dot'"):
    settings.from_config(config)


# ----------------------------------------------------------------------------
# Gradient accumulation.


@pytest.mark.parametrize("variant,accum", [("kd", 4), ("pkd", 2)])
def test_accumulation_equals_one_large_batch(no_dropout_dirs, variant, accum):
  arg = f"variant={variant}"
  run, plain = _compiled(no_dropout_dirs, f"{variant}1", arg)
  _, acc = _compiled(
      no_dropout_dirs, f"{variant}{accum}", arg, optim__grad_accum_steps=accum
  )
  batches = _batches(run, 2, padding=_PADDING)
  (want, want_m), (got, got_m) = _train(plain, batches), _train(acc, batches)
  assert want_m[0]["task"][1] == 8 - len(_PADDING)  # Padding is excluded.
  assert {"kd", variant} <= set(want_m[0])
  _assert_close(got_m, want_m)
  _assert_close(got.params, want.params)
  _assert_close(got.opt_state, want.opt_state)


def _grads_kept():
  """An optax transformation whose state is the last gradients."""
  return optax.GradientTransformation(
      lambda p: jax.tree.map(jnp.zeros_like, p),
      lambda g, s, p=None: (jax.tree.map(jnp.zeros_like, g), g),
  )


_RELEASED = dict(
    loss__pooling="first",
    loss__teacher_layers="odd",
    loss__objective="nce",
    loss__positive="bank",
    bank__shared_negatives=True,
)


@pytest.mark.slow  # Two train-step compiles each.
@pytest.mark.parametrize("kw", [{}, _RELEASED], ids=["paper", "released"])
def test_accumulation_with_bank_equals_sequential_micro_steps(
    no_dropout_dirs, kw
):
  num, name = 2, "codir_acc_" + kw.get("loss__objective", "info_nce")
  run, acc = _compiled(
      no_dropout_dirs, name, "variant=codir", optim__grad_accum_steps=num, **kw
  )
  (batch,) = _batches(run, 1, padding=_PADDING)
  s0 = acc.init()
  ref_step = jax.jit(
      lambda s, b, t: step_lib.train_step(
          s, b, t, graphs=run.graphs, tx=_grads_kept(), obj=run.objective
      )
  )
  # The plain step on micro-batch a (rows a*4 .. a*4+3 on one device),
  # with the step key fold_in(fold_in(rng, 0), a) and the bank so far.
  ref = s0.replace(
      opt_state=_grads_kept().init(s0.params),
      rng=jax.random.fold_in(s0.rng, s0.step),
  )
  valid = np.asarray(batch["valid"])
  grads, metrics = None, []
  for a in range(num):
    rows = slice(a * 4, a * 4 + 4)
    mb = {k: v[rows] for k, v in batch.items()}
    out, m = ref_step(ref.replace(step=jnp.int32(a)), mb, acc.teacher_params)
    weight = valid[rows].sum() / valid.sum()
    g = jax.tree.map(lambda x: weight * x, out.opt_state)
    grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
    ref = ref.replace(bank=out.bank, log_z=out.log_z)
    metrics.append((weight, jax.device_get(m)))
  tx = optimizer.make_optimizer(run.optim)
  updates, _ = tx.update(grads, s0.opt_state, s0.params)
  want_params = optax.apply_updates(s0.params, updates)

  got, got_m = acc.train_step(acc.init(), batch, acc.teacher_params)
  _assert_close(got.params, want_params)
  _assert_close(got.bank, ref.bank)
  _assert_close(got.log_z, ref.log_z)
  got_m = jax.device_get(got_m)
  for name in run.objective.terms:
    for i in (0, 1):
      total = sum(m[name][i] for _, m in metrics)
      np.testing.assert_allclose(got_m[name][i], total, rtol=1e-5)
  loss = sum(w * m["loss"][0] for w, m in metrics)
  np.testing.assert_allclose(got_m["loss"][0], loss, rtol=1e-5)


def test_accumulation_needs_an_even_split(tiny_dirs):
  config = assets.tiny_config(*tiny_dirs, optim__grad_accum_steps=3)
  with pytest.raises(ValueError, match="grad_accum_steps = 3"):
    settings.from_config(config)


def test_remat_and_teacher_sharding_may_change_on_resume():
  """The recipe lock: memory knobs may change, accumulation may not."""
  base = settings.base_defaults()
  old = copy.deepcopy(base)  # A config.json written before the knobs.
  del old["student"]["remat"], old["teacher"]["shard_params"]
  del old["optim"]["grad_accum_steps"]
  new = copy.deepcopy(base)
  new["student"]["remat"], new["teacher"]["shard_params"] = "full", True
  assert recipe.differences(old, new, defaults=base) == []
  new["optim"]["grad_accum_steps"] = 2
  assert recipe.differences(old, new, defaults=base) == [
      ("optim.grad_accum_steps", "<absent>", 2)
  ]
