"""Scale knobs against the plain step: remat and gradient accumulation.

- `student.remat`: the encoder's loss and gradients, with dropout on, equal
  the plain ones for every policy, and the policy is really in the traced
  program; the CoDIR step's gradients, bank and metrics with remat equal the
  plain step's (dropout on), and `student.remat` in a config reaches the
  jitted train step.
- `optim.grad_accum_steps` with a memory bank (CoDIR with the paper's and
  with the released code's objective; task and KD terms too): one step
  equals the plain step run on each micro-batch in order (bank threaded
  through, parameters held), their gradients weighted by valid rows and
  applied once (codir_jax/train/accumulate.py), with padding rows spread
  unevenly (the paper's case has a micro-batch with none valid).
KD/PKD accumulation against one large batch (the batch spread over devices
too) and teacher parameter sharding need several devices:
sharded_step_test.py.

Compiling is nearly all the cost, so each program is compiled once (the
plain micro-step serves the remat and the accumulation tests; the
encoder's plain and remat gradients are one program), without XLA's
backend optimisation (_FAST_COMPILE).
"""

import copy
from typing import Any, Callable, NamedTuple

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

# Programs compile in about half the time without XLA's backend (LLVM)
# optimisation; every comparison here is between programs compiled alike.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}

# Rows with valid = False: with 4 micro-batches of 2 rows, micro-batch 1
# (rows 2, 3) has none valid; with 2 of 4 rows, 2 and 3 rows are valid.
_PADDING = (2, 3, 6)


def _compiled(dirs, workdir, arg, **kw):
  config = assets.tiny_config(*dirs, arg, **kw)
  mesh = sharding.make_mesh([("data", 1), ("model", 1)], jax.devices()[:1])
  run, _ = glue_run.build_run(settings.from_config(config), str(workdir), mesh)
  return run, loop.compile_run(run)


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


def _policy_in_jaxpr(name: str) -> str:
  """How a jaxpr prints the policy of `name`'s remat equations."""
  fn = remat.POLICIES[name]  # A function, or a DotsSaveable object.
  fn_name = getattr(fn, "__name__", None)
  return "policy=" + (f"<function {fn_name} " if fn_name else repr(fn))


# ----------------------------------------------------------------------------
# Remat of the encoder.


@pytest.fixture(scope="module")
def encoder_grads():
  """(config, loss(params, policy), params, {policy: (loss, grads)})."""
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

  # Plain ('') and every policy in one program: it compiles in about half
  # the time of one program each.
  every = jax.jit(
      lambda p: {n: jax.value_and_grad(loss)(p, n) for n in remat.POLICIES},
      compiler_options=_FAST_COMPILE,
  )
  return config, loss, params, jax.device_get(every(params))


@pytest.mark.parametrize("policy", [p for p in remat.POLICIES if p])
def test_remat_encoder_same_loss_and_gradients(encoder_grads, policy):
  config, loss, params, results = encoder_grads
  (want, want_g), (got, got_g) = results[""], results[policy]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  _assert_close(got_g, want_g)
  # The policy is in the program (and absent without it).
  jaxpr = jax.make_jaxpr(jax.value_and_grad(loss), static_argnums=1)
  got_jaxpr = str(jaxpr(params, policy))
  assert got_jaxpr.count(_policy_in_jaxpr(policy)) == config.num_layers
  assert "remat" not in str(jaxpr(params, ""))


def test_unknown_remat_policy_is_refused(tiny_dirs):
  config = assets.tiny_config(*tiny_dirs, student__remat="dot")
  with pytest.raises(ValueError, match="config.student.remat = 'dot'"):
    settings.from_config(config)


# ----------------------------------------------------------------------------
# The CoDIR step: plain micro-steps, with and without remat, against the
# accumulated step.


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
# Objective name -> (config overrides, grad_accum_steps).
_OBJECTIVES = {"paper": ({}, 4), "released": (_RELEASED, 2)}


class _Codir(NamedTuple):
  run: Any
  acc: loop.Compiled  # The configured step: grad_accum_steps = num.
  num: int
  batch: dict[str, np.ndarray]  # One batch, the _PADDING rows not valid.
  micro: Callable[..., Any]  # See _micro_step.

  def accumulated_step(self, state):
    """The configured step on `batch` from `state` (donated)."""
    args = (state, sharding.put_batch(self.batch, self.run.mesh))
    args += (self.acc.teacher_params,)
    return self.acc.train_step.lower(*args).compile(_FAST_COMPILE)(*args)


def _micro_step(run):
  """jit: the plain step on micro-batch a, as accumulate.py defines it.

  (state, micro-batch, teacher, a, remat=) -> (grads, bank, log Z,
  metrics): the step with step = a from the key fold_in(rng, step), so its
  key is fold_in(fold_in(rng, step), a); the optimizer keeps the gradients
  as its state and leaves the parameters as they are.
  """
  tx = _grads_kept()

  def micro(state, mb, teacher, a, remat):
    ref = state.replace(
        step=a,
        rng=jax.random.fold_in(state.rng, state.step),
        opt_state=tx.init(state.params),
    )
    out, m = step_lib.train_step(
        ref, mb, teacher, graphs=run.graphs, tx=tx, obj=run.objective,
        remat=remat,
    )  # fmt: skip
    return out.opt_state, out.bank, out.log_z, m

  return jax.jit(micro, static_argnames="remat", compiler_options=_FAST_COMPILE)


@pytest.fixture(scope="module")
def codir(tiny_dirs, tmp_path_factory):
  """name -> _Codir (built once); the tiny teacher's dropout (0.1) is on."""
  root, built = tmp_path_factory.mktemp("scale"), {}

  def get(name):
    if name not in built:
      kw, num = _OBJECTIVES[name]
      run, acc = _compiled(
          tiny_dirs, root / name, "variant=codir",
          optim__grad_accum_steps=num, **kw,
      )  # fmt: skip
      batch = dict(next(run.make_iterator()))
      batch["valid"] = np.array(batch["valid"])
      batch["valid"][list(_PADDING)] = False
      built[name] = _Codir(run, acc, num, batch, _micro_step(run))
    return built[name]

  return get


def _sequential(c: _Codir, state, remat_policy=""):
  """The micro-steps in order, bank and log Z threaded through.

  Returns ([(valid-row weight, grads, metrics)], state with the last bank).
  """
  valid, rows, out = c.batch["valid"], len(c.batch["valid"]) // c.num, []
  for a in range(c.num):
    part = slice(a * rows, a * rows + rows)
    mb = {k: v[part] for k, v in c.batch.items()}
    grads, bank, log_z, m = c.micro(
        state, mb, c.acc.teacher_params, np.int32(a), remat=remat_policy
    )
    state = state.replace(bank=bank, log_z=log_z)
    weight = float(valid[part].sum() / valid.sum())
    out.append((weight, jax.device_get(grads), jax.device_get(m)))
  return out, state


@pytest.mark.slow  # Two step compiles (one shared with the test below).
def test_remat_train_step_same_as_plain(codir, tiny_dirs, tmp_path):
  """With dropout on (the tiny teacher's 0.1): replayed masks are equal."""
  c = codir("paper")
  assert c.run.model.config.hidden_dropout > 0
  s0 = c.acc.init()
  (want, want_s), (got, got_s) = _sequential(c, s0), _sequential(c, s0, "full")
  for (_, want_g, want_m), (_, got_g, got_m) in zip(want, got):
    _assert_close(got_g, want_g)
    _assert_close(got_m, want_m)
  _assert_close(got_s.bank, want_s.bank)
  _assert_close(got_s.log_z, want_s.log_z)
  # `student.remat` in the config reaches the jitted train step: one remat
  # per student layer (traced, not compiled).
  run, compiled = _compiled(
      tiny_dirs, tmp_path, "variant=codir", student__remat="full"
  )
  batch = sharding.put_batch(c.batch, run.mesh)
  args = (compiled.abstract, batch, compiled.teacher_params)
  jaxpr = str(jax.make_jaxpr(compiled.train_step)(*args))
  want_count = run.model.config.num_layers
  assert jaxpr.count(_policy_in_jaxpr("full")) == want_count


@pytest.mark.slow  # Two step compiles each.
@pytest.mark.parametrize("name", list(_OBJECTIVES))
def test_accumulation_with_bank_equals_sequential_micro_steps(codir, name):
  c = codir(name)
  s0 = c.acc.init()
  micro, ref = _sequential(c, s0)
  weights = [w for w, _, _ in micro]
  assert sum(weights) == pytest.approx(1.0)
  if name == "paper":
    assert 0.0 in weights  # A micro-batch of padding rows only.
  grads = jax.tree.map(
      lambda *g: sum(w * x for w, x in zip(weights, g)),
      *[g for _, g, _ in micro],
  )
  tx = optimizer.make_optimizer(c.run.optim)
  apply = jax.jit(
      lambda g, o, p: optax.apply_updates(p, tx.update(g, o, p)[0]),
      compiler_options=_FAST_COMPILE,
  )
  want_params = apply(grads, s0.opt_state, s0.params)

  got, got_m = c.accumulated_step(c.acc.init())
  _assert_close(got.params, want_params)
  _assert_close(got.bank, ref.bank)
  _assert_close(got.log_z, ref.log_z)
  got_m = jax.device_get(got_m)
  for term in c.run.objective.terms:
    for i in (0, 1):
      total = sum(m[term][i] for _, _, m in micro)
      np.testing.assert_allclose(got_m[term][i], total, rtol=1e-5)
  loss = sum(w * m["loss"][0] for w, _, m in micro)
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
