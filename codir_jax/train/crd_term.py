"""The contrastive term of the objective and the bank write that follows it.

  L_crd = (L_s + L_t) / 2      (METHOD.md "Contrastive objective", CRD)

z = normalize(project(concat_l pool(h_l))) on each side; the student
direction anchors z_s against the teacher side (positive z_t, or M_t[i] in
the released code; negatives from M_t or from the batch), the teacher
direction the other way round. `term_fn(spec)` picks, once, the negative
source (bank | in_batch), the positive (current | bank), the per-direction
loss (InfoNCE | CRD NCE with its first-batch log Z) and the slot ids (by
example | FIFO queue); `bank_writer(spec)` the write after the update
(momentum by example id | FIFO | none). Term functions take the
objective's `Inputs` and return ([B] values, [B] mask, aux).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp

from codir_jax import losses
from codir_jax.losses import bank_losses
from codir_jax.losses import memory_bank


def pick(table: dict[str, Any], name: str, key: str) -> Any:
  if name not in table:
    raise ValueError(f"{key} = {name!r}; choose from {sorted(table)}")
  return table[name]


def pooled(hidden_states, layer_ids, batch, pooling) -> jax.Array:
  """[B, L, D]: pooled hidden states of the mapped layers."""
  return losses.stack_pooled_layers(
      hidden_states,
      layer_ids=layer_ids,
      mask=batch["attention_mask"],
      pooling=pooling,
  )


def _representations(x, spec):
  """(z_s, z_t): normalize(project(concat_l pool(h_l))) of each side."""
  s_pooled = pooled(x.s_hidden, spec.student_layers, x.batch, spec.pooling)
  z = []
  for graph, params, p in (
      (x.graphs.proj_s, x.params["proj_s"], s_pooled),
      (x.graphs.proj_t, x.params["proj_t"], x.t_pooled),
  ):
    z.append(losses.l2_normalize(nnx.merge(graph, params)(p)))
  return z  # [B, P] each, or [B, L, P] per layer.


def _in_batch(x, *, spec):
  z_s, z_t = _representations(x, spec)
  valid = x.batch["valid"]
  labels = x.batch["labels"] if spec.label_aware else None
  gap = spec.regression_gap if spec.is_regression else None

  def both(a, b):
    return 0.5 * (
        losses.in_batch_info_nce(
            a,
            b,
            temperature=spec.temperature,
            valid=valid,
            labels=labels,
            label_gap=gap,
        )
        + losses.in_batch_info_nce(
            b,
            a,
            temperature=spec.temperature,
            valid=valid,
            labels=labels,
            label_gap=gap,
        )
    )

  if z_s.ndim == 2:
    return both(z_s, z_t), valid, {}
  per_layer = [both(z_s[:, l], z_t[:, l]) for l in range(z_s.shape[1])]
  return sum(per_layer), valid, {}


def _fifo_ids(batch):
  # Queue slots are not example ids: no slot is the query's own.
  return jnp.full_like(batch["example_ids"], -1)


def _example_ids(batch):
  return jnp.where(batch["valid"], batch["example_ids"], 0)


def _current_positives(x, ids, z_s, z_t):
  del x, ids
  return z_t, z_s


def _bank_positives(x, ids, z_s, z_t):
  """Released code: the other side's bank entry, read before the write."""
  del z_s, z_t
  return (
      memory_bank.read(x.bank["teacher"], ids=ids, mesh=x.mesh),
      memory_bank.read(x.bank["student"], ids=ids, mesh=x.mesh),
  )


def _common(x, spec, anchors, positives, bank, ids, rng):
  return dict(
      queries=anchors,
      positives=positives,
      bank=bank,
      rng=rng,
      query_ids=ids,
      query_labels=x.batch["labels"] if spec.label_aware else None,
      num_negatives=spec.num_negatives,
      temperature=spec.temperature,
      label_aware=spec.label_aware,
      label_gap=spec.regression_gap if spec.is_regression else None,
      mesh=x.mesh,
  )


def _info_nce_direction(x, spec, log_z, **common):
  del x, spec
  return bank_losses.bank_info_nce(**common), log_z


def _nce_direction(x, spec, log_z, **common):
  """CRD NCE; Z is computed on the first batch (while log_z is NaN)."""
  num_data = spec.num_train_examples

  def first_batch_log_z():
    return bank_losses.bank_crd_log_z(
        **common, num_data=num_data, valid=x.batch["valid"]
    )

  log_z = jax.lax.cond(jnp.isnan(log_z), first_batch_log_z, lambda: log_z)
  return (
      bank_losses.bank_crd_nce(**common, log_z=log_z, num_data=num_data),
      log_z,
  )


def _bank(x, *, spec, ids_fn, positives_fn, direction_fn):
  """Symmetric bank objective (METHOD.md): (L_s + L_t) / 2."""
  z_s, z_t = _representations(x, spec)
  if z_s.ndim != 2:
    raise ValueError("combine='per_layer' supports in-batch negatives only")
  ids = ids_fn(x.batch)
  pos_for_s, pos_for_t = positives_fn(x, ids, z_s, z_t)
  key_s, key_t = jax.random.split(x.rng)
  if spec.shared_negatives:
    key_t = key_s  # Same key, same labels/valid on both banks: same ids.
  loss_s, z0 = direction_fn(
      x,
      spec,
      x.log_z[0],
      **_common(x, spec, z_s, pos_for_s, x.bank["teacher"], ids, key_s),
  )
  loss_t, z1 = direction_fn(
      x,
      spec,
      x.log_z[1],
      **_common(x, spec, z_t, pos_for_t, x.bank["student"], ids, key_t),
  )
  aux = {"z_s": z_s, "z_t": z_t, "log_z": jnp.stack([z0, z1])}
  return 0.5 * (loss_s + loss_t), x.batch["valid"], aux


# ----------------------------------------------------------------------------
# Bank writes.


def _no_write(bank, aux, batch, mesh):
  del aux, batch, mesh
  return bank


def _momentum_write(bank, aux, batch, mesh, *, momentum: float):
  ids = _example_ids(batch)
  return {
      side: memory_bank.write(
          bank[side],
          ids=ids,
          vectors=aux[z],
          mask=batch["valid"],
          momentum=momentum,
          mesh=mesh,
      )
      for side, z in (("student", "z_s"), ("teacher", "z_t"))
  }


def _fifo_write(bank, aux, batch, mesh):
  return {
      side: memory_bank.write_fifo(
          bank[side], vectors=aux[z], mask=batch["valid"], mesh=mesh
      )
      for side, z in (("student", "z_s"), ("teacher", "z_t"))
  }


def bank_writer(spec) -> Callable[..., Any]:
  """(bank, aux, batch, mesh) -> new bank, for `spec`'s bank kind."""
  if not spec.uses_bank:
    return _no_write
  return pick(
      {
          "fifo": _fifo_write,
          "momentum": functools.partial(
              _momentum_write, momentum=spec.momentum
          ),
      },
      spec.bank_kind,
      "bank kind",
  )


def term_fn(spec):
  """The crd term's function for `spec` (in-batch or bank negatives)."""
  if spec.negatives == "in_batch":
    return functools.partial(_in_batch, spec=spec)
  pick({"bank": 0}, spec.negatives, "config.loss.negatives")
  return functools.partial(
      _bank,
      spec=spec,
      ids_fn=pick(
          {"fifo": _fifo_ids, "momentum": _example_ids},
          spec.bank_kind,
          "bank kind",
      ),
      positives_fn=pick(
          {"current": _current_positives, "bank": _bank_positives},
          spec.positive,
          "config.loss.positive",
      ),
      direction_fn=pick(
          {"info_nce": _info_nce_direction, "nce": _nce_direction},
          spec.objective,
          "config.loss.objective",
      ),
  )
