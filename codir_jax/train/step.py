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
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from codir_jax import losses
from codir_jax.train import forward as forward_lib
from codir_jax.train.state import TrainState


def teacher_outputs(graphs, teacher_params, batch, obj):
  """(logits, pooled mapped layers [B, L, D]), both stop-gradient-ed."""
  if not obj.spec.uses_teacher:
    return None, None
  logits, out = forward_lib.forward(graphs.teacher, teacher_params, batch)
  t_pooled = obj.teacher_pooled(out.hidden_states, batch)
  return jax.lax.stop_gradient(logits), jax.lax.stop_gradient(t_pooled)


Metrics = dict[str, tuple[jax.Array, jax.Array]]


def weighted_sum(obj: Any, x: Any) -> tuple[jax.Array, tuple[Metrics, dict]]:
  """L = sum_term w * sum / max(count, 1) over the objective's table.

  Returns (L, ({term: (sum, count)} plus 'loss', aux of the terms)).
  """
  metrics, aux = {}, {}
  for name, term in obj.terms.items():
    values, term_mask, extra = term.fn(x)
    metrics[name] = losses.masked_sum_count(values, mask=term_mask)
    aux.update(extra)
  terms = obj.terms.items()
  weighted = [(t, *metrics[n]) for n, t in terms if t.weight is not None]
  loss = sum(t.scale(c) * s / jnp.maximum(c, 1.0) for t, s, c in weighted)
  metrics["loss"] = (loss, jnp.ones((), jnp.float32))
  return loss, (metrics, aux)


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    teacher_params: Any,
    *,
    graphs: forward_lib.Graphs,
    tx: optax.GradientTransformation,
    obj: Any,  # objective.Objective
    mesh: Any = None,
) -> tuple[TrainState, Metrics]:
  """One CoDIR update; `state` is donated by the caller's jit."""
  step_rng = jax.random.fold_in(state.rng, state.step)
  dropout_rng, bank_rng = jax.random.split(step_rng)
  teacher = teacher_outputs(graphs, teacher_params, batch, obj)

  def loss_fn(params):
    student = forward_lib.forward(
        graphs.student, params["student"], batch, dropout_rng=dropout_rng
    )
    args = (graphs, params, student, teacher, batch, state, bank_rng, mesh)
    return weighted_sum(obj, obj.inputs(*args))

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (_, (metrics, aux)), grads = grad_fn(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  norms = {"l2_grads": grads, "l2_params": params, "l2_updates": updates}
  one = jnp.ones((), jnp.float32)
  metrics.update({k: (optax.tree.norm(t), one) for k, t in norms.items()})
  # The NaN/inf tripwire: one flag from the loss and the norms just taken
  # (a norm is finite iff every element is, barring overflow past ~1e19).
  total = metrics["loss"][0] + sum(metrics[k][0] for k in norms)
  metrics["finite"] = (jnp.isfinite(total).astype(jnp.float32), one)
  bank = obj.write_bank(state.bank, aux, batch, mesh)
  log_z = aux.get("log_z", state.log_z)
  state = state.replace(step=state.step + 1, params=params)
  return state.replace(opt_state=opt_state, bank=bank, log_z=log_z), metrics


def predict_step(
    params: Any, batch: dict[str, jax.Array], *, graphdef: Any
) -> jax.Array:
  """Deterministic forward: logits [B, C] (regression: [B, 1])."""
  return forward_lib.predict_step(params, batch, graphdef=graphdef)
