"""The CoDIR train step: one jit over pytrees (STYLE.md sec. 3).

In order: the step key; the frozen teacher's forward (outside the gradient,
stop_gradient); the student's forward/backward with the weighted sum of the
objective's terms (`objective.py` has the table and the equations); the
optax update; the memory-bank write; step + 1. Plain fine-tuning of a
teacher (`finetune_teacher`) is the same step with no teacher: L = task.
Each term is a mean over its own mask (valid rows of the global batch, or
masked tokens in CoDIR-Pre). Metrics come back as `{name: (sum, count)}`;
'finite' is 1.0 when the loss, the gradients, the update and the updated
parameters are all finite (the loop checks it before any checkpoint).

Scale knobs (settings.Scale), off by default (then the step is exactly the
one above): `remat` recomputes the student's layer activations in the
backward pass (models/remat.py); `accum_steps` > 1 runs the forward and
backward over micro-batches in a `lax.scan` inside this same jit and
updates once (`accumulate.py` says what equals one large batch).
Micro-batch a's keys are split(fold_in(fold_in(rng, step), a)).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from codir_jax import losses
from codir_jax.train import accumulate
from codir_jax.train import forward as forward_lib
from codir_jax.train.state import TrainState


def teacher_outputs(graphs, teacher_params, batch, obj):
  """(logits, pooled mapped layers [B, L, D]), both stop-gradient-ed.

  Read from the batch (`t_logits` [B, C], `t_pooled` [B, L, D]) when the
  pipeline holds the cached outputs (config.teacher.cache_outputs,
  teacher_cache.py); otherwise the frozen teacher runs on the batch.
  """
  if not obj.spec.uses_teacher:
    return None, None
  if "t_logits" in batch:
    cached = batch["t_logits"], batch["t_pooled"]
    return tuple(jax.lax.stop_gradient(x) for x in cached)
  logits, out = forward_lib.forward(graphs.teacher, teacher_params, batch)
  t_pooled = obj.teacher_pooled(out.hidden_states, batch)
  return jax.lax.stop_gradient(logits), jax.lax.stop_gradient(t_pooled)


Metrics = dict[str, tuple[jax.Array, jax.Array]]


def weighted_sum(
    obj: Any, x: Any, counts: dict[str, jax.Array] | None = None
) -> tuple[jax.Array, tuple[Metrics, dict]]:
  """L = sum_term w * sum / max(count, 1) over the objective's table.

  `counts` (a micro-batch's step): each term's count over the whole batch,
  used in place of the term's own count to normalise.
  Returns (L, ({term: (sum, count)} plus 'loss', aux of the terms)).
  """
  metrics, aux = {}, {}
  for name, term in obj.terms.items():
    values, term_mask, extra = term.fn(x)
    metrics[name] = losses.masked_sum_count(values, mask=term_mask)
    aux.update(extra)
  terms = obj.terms.items()
  norm = {n: metrics[n][1] if counts is None else counts[n] for n, _ in terms}
  weighted = [
      (t, metrics[n][0], norm[n]) for n, t in terms if t.weight is not None
  ]
  loss = sum(t.scale(c) * s / jnp.maximum(c, 1.0) for t, s, c in weighted)
  metrics["loss"] = (loss, jnp.ones((), jnp.float32))
  return loss, (metrics, aux)


def _gradients(state, batch, teacher_params, keys, counts, *, setup):
  """(grads, metrics, aux) of the objective on `batch` at `state.params`."""
  graphs, obj, mesh, remat = setup
  dropout_rng, bank_rng = keys
  teacher = teacher_outputs(graphs, teacher_params, batch, obj)

  def loss_fn(params):
    student = forward_lib.forward(
        graphs.student,
        params["student"],
        batch,
        dropout_rng=dropout_rng,
        remat=remat,
    )
    args = (graphs, params, student, teacher, batch, state, bank_rng, mesh)
    return weighted_sum(obj, obj.inputs(*args), counts)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (_, (metrics, aux)), grads = grad_fn(state.params)
  return grads, metrics, aux


def _accumulated(state, batch, teacher_params, step_rng, *, setup, num):
  """Summed grads and metrics over `num` micro-batches; bank, log Z after."""
  _, obj, mesh, _ = setup
  counts = obj.counts(batch)

  def micro(mb, a, carry):
    s = state.replace(bank=carry[0], log_z=carry[1])
    keys = jax.random.split(jax.random.fold_in(step_rng, a))
    grads, metrics, aux = _gradients(
        s, mb, teacher_params, keys, counts, setup=setup
    )
    bank = obj.write_bank(s.bank, aux, mb, mesh)
    return grads, metrics, (bank, aux.get("log_z", s.log_z))

  carry = (state.bank, state.log_z)
  grads, metrics, carry = accumulate.run(
      micro, batch, carry, num=num, mesh=mesh
  )
  metrics["loss"] = (metrics["loss"][0], jnp.ones((), jnp.float32))
  return grads, metrics, carry


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    teacher_params: Any,
    *,
    graphs: forward_lib.Graphs,
    tx: optax.GradientTransformation,
    obj: Any,  # objective.Objective
    mesh: Any = None,
    remat: str = "",
    accum_steps: int = 1,
) -> tuple[TrainState, Metrics]:
  """One CoDIR update; `state` is donated by the caller's jit."""
  step_rng = jax.random.fold_in(state.rng, state.step)
  setup = (graphs, obj, mesh, remat)
  if accum_steps > 1:
    grads, metrics, (bank, log_z) = _accumulated(
        state, batch, teacher_params, step_rng, setup=setup, num=accum_steps
    )
  else:
    keys = jax.random.split(step_rng)
    grads, metrics, aux = _gradients(
        state, batch, teacher_params, keys, None, setup=setup
    )
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  norms = {"l2_grads": grads, "l2_params": params, "l2_updates": updates}
  one = jnp.ones((), jnp.float32)
  metrics.update({k: (optax.tree.norm(t), one) for k, t in norms.items()})
  # The NaN/inf tripwire: one flag from the loss and the norms just taken
  # (a norm is finite iff every element is, barring overflow past ~1e19).
  total = metrics["loss"][0] + sum(metrics[k][0] for k in norms)
  metrics["finite"] = (jnp.isfinite(total).astype(jnp.float32), one)
  if accum_steps == 1:  # Written here, as before the knobs existed.
    bank = obj.write_bank(state.bank, aux, batch, mesh)
    log_z = aux.get("log_z", state.log_z)
  state = state.replace(step=state.step + 1, params=params)
  return state.replace(opt_state=opt_state, bank=bank, log_z=log_z), metrics


def predict_step(
    params: Any, batch: dict[str, jax.Array], *, graphdef: Any
) -> jax.Array:
  """Deterministic forward: logits [B, C] (regression: [B, 1])."""
  return forward_lib.predict_step(params, batch, graphdef=graphdef)
