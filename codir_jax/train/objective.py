"""The CoDIR objective as a table of terms, chosen once at build time.

  L = (1 - beta) task + beta KD + mu PKD + lambda L_crd        (METHOD.md)

| term     | per-example value (mask)                      | weight        |
|----------|-----------------------------------------------|---------------|
| task     | CE(y, s) | MSE(s, y) (regression) | CE on     | 1 - beta      |
|          | masked tokens (mlm) (valid rows / mlm_mask)   |               |
| accuracy | [argmax s == y] (same mask)                   | metric only   |
| kd       | rho^2 KL(t/rho || s/rho) | MSE(s, t)          | beta          |
| pkd      | losses.pkd_loss of the pooled mapped layers   | mu            |
| crd      | (L_s + L_t) / 2, InfoNCE or CRD NCE against   | lambda (or    |
|          | bank or in-batch negatives (valid rows)       | lambda / B)   |

A term is in the table only when its weight is > 0 (task and accuracy
always; no accuracy for regression). Every term function is pure: it maps
`Inputs` (outputs of both models, the batch, the train state, a key) to
`(values, mask, aux)`; the train step logs `masked_sum_count(values, mask)`
per term and minimises sum_term weight * sum / max(count, 1). `aux` carries
what the bank write needs (z_s, z_t) and CRD NCE's frozen log Z.

The functions are the ones of the equation table in
`codir_jax/losses/__init__.py`; the choices between them (pooling,
objective, negatives, positives, bank kind) are made here by dict lookups
when the objective is built, never inside the step.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from codir_jax import losses
from codir_jax.train import crd_term
from codir_jax.train import settings as settings_lib


@dataclasses.dataclass(frozen=True)
class Spec:
  """What the objective needs, resolved against the models and data."""

  task_kind: str  # 'classification' | 'regression' | 'mlm'.
  kd_weight: float = 0.0  # beta.
  kd_temperature: float = 2.0  # rho.
  crd_weight: float = 0.0  # lambda.
  pkd_weight: float = 0.0  # mu.
  temperature: float = 0.07  # tau.
  objective: str = "info_nce"  # 'info_nce' | 'nce'.
  negatives: str = "bank"  # 'bank' | 'in_batch'.
  pooling: str = "mean"  # 'mean' | 'first'.
  combine: str = "concat"  # 'concat' | 'per_layer'.
  positive: str = "current"  # 'current' | 'bank'.
  student_layers: tuple[int, ...] = ()  # 1..Ls.
  teacher_layers: tuple[int, ...] = ()  # Paired with student_layers.
  num_negatives: int = 100  # K.
  momentum: float = 0.5  # Bank momentum m.
  bank_kind: str = "momentum"  # 'momentum' (by example id) | 'fifo'.
  label_aware: bool = True
  regression_gap: float = 1.0
  num_train_examples: int = 0  # N of CRD NCE's normaliser.
  shared_negatives: bool = False  # Released: one id set, both directions.
  crd_batch_scaled: bool = False  # Released: lambda / B.

  @property
  def is_regression(self) -> bool:
    return self.task_kind == "regression"

  @property
  def uses_teacher(self) -> bool:
    return self.kd_weight > 0 or self.crd_weight > 0 or self.pkd_weight > 0

  @property
  def uses_bank(self) -> bool:
    return self.crd_weight > 0 and self.negatives == "bank"


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What every term function reads (built inside the traced step)."""

  graphs: Any  # forward.Graphs: the static graph definitions.
  params: Any  # Trainable params: student, proj_s, proj_t.
  s_logits: jax.Array  # [B, C] or [B, T, V] (mlm).
  s_hidden: Any  # Student hidden states, index 0 = embeddings.
  t_logits: jax.Array | None  # Teacher logits (stop-gradient).
  t_pooled: jax.Array | None  # [B, L, D] teacher pooled mapped layers.
  labels: jax.Array  # [B] or [B, T] targets (0 where masked).
  mask: jax.Array  # [B] valid rows or [B, T] masked valid tokens.
  batch: dict[str, jax.Array]
  bank: Any  # {"student": MemoryBank, "teacher": MemoryBank} or {}.
  log_z: jax.Array  # [2] CRD NCE normalisers (NaN before the first step).
  rng: jax.Array  # Negative-sampling key of this step.
  mesh: Any


TermFn = Callable[[Inputs], tuple[jax.Array, jax.Array, dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Term:
  """One row of the table. weight None = a logged metric, not minimised."""

  fn: TermFn
  weight: float | None
  per_batch: bool = False  # weight / (valid rows): released lambda / B.
  # The mask `fn` returns: 'targets' (the objective's targets mask: valid
  # rows, or masked tokens in mlm) or 'rows' (batch['valid']). `counts`
  # reads it to normalise accumulated micro-batches by the whole batch.
  mask: str = "targets"

  def scale(self, count: jax.Array) -> Any:
    return (
        self.weight / jnp.maximum(count, 1.0)
        if self.per_batch
        else (self.weight)
    )


@dataclasses.dataclass(frozen=True)
class Objective:
  spec: Spec
  terms: dict[str, Term]  # Insertion order = order of the weighted sum.
  # batch -> (labels, mask) of the output terms.
  targets: Callable[[dict[str, jax.Array]], tuple[jax.Array, jax.Array]]
  # (bank, aux, batch, mesh) -> new bank; identity without a bank.
  write_bank: Callable[..., Any]

  def counts(self, batch) -> dict[str, jax.Array]:
    """{term: float32 count of its mask} over `batch`, before any forward."""
    masks = {"targets": self.targets(batch)[1], "rows": batch["valid"]}
    return {
        name: jnp.sum(masks[t.mask].astype(jnp.float32))
        for name, t in self.terms.items()
    }

  def teacher_pooled(self, hidden_states, batch) -> jax.Array:
    """[B, L, D] pooled mapped teacher layers (the step stops gradients)."""
    return crd_term.pooled(
        hidden_states, self.spec.teacher_layers, batch, self.spec.pooling
    )

  def inputs(
      self, graphs, params, student, teacher, batch, state, rng, mesh
  ) -> "Inputs":
    """The term functions' `Inputs` from the step's pieces.

    `student` = (logits, outputs) of the student forward, `teacher` =
    (logits, pooled mapped layers) or (None, None); `state` the train state.
    """
    s_logits, s_out = student
    t_logits, t_pooled = teacher
    labels, mask = self.targets(batch)
    return Inputs(
        graphs,
        params,
        s_logits,
        s_out.hidden_states,
        t_logits,
        t_pooled,
        labels,
        mask,
        batch,
        state.bank,
        state.log_z,
        rng,
        mesh,
    )


# ----------------------------------------------------------------------------
# Targets and output terms.


def _example_targets(batch):
  return batch["labels"], batch["valid"]


def _token_targets(batch):
  mask = batch["mlm_mask"] & batch["valid"][:, None]  # [B, T]
  return jnp.where(mask, batch["mlm_labels"], 0), mask


TARGETS = {
    "classification": _example_targets,
    "regression": _example_targets,
    "mlm": _token_targets,
}


def _cross_entropy(x: Inputs):
  return losses.cross_entropy(logits=x.s_logits, labels=x.labels), x.mask, {}


def _mse_task(x: Inputs):
  return losses.mse(predictions=x.s_logits[:, 0], targets=x.labels), x.mask, {}


def _accuracy(x: Inputs):
  hit = jnp.argmax(x.s_logits, axis=-1) == x.labels
  return hit.astype(jnp.float32), x.mask, {}


def _kd_kl(x: Inputs, *, rho: float):
  kd = losses.kd_loss(
      student_logits=x.s_logits, teacher_logits=x.t_logits, temperature=rho
  )
  return kd, x.mask, {}


def _kd_mse(x: Inputs):
  kd = losses.mse(predictions=x.s_logits[:, 0], targets=x.t_logits[:, 0])
  return kd, x.mask, {}


def _pkd(x: Inputs, *, spec: Spec):
  s_pooled = crd_term.pooled(
      x.s_hidden, spec.student_layers, x.batch, spec.pooling
  )
  value = losses.pkd_loss(student_pooled=s_pooled, teacher_pooled=x.t_pooled)
  return value, x.batch["valid"], {}


# ----------------------------------------------------------------------------
# Building the table.


def build(spec: Spec) -> Objective:
  """The term table and the bank write of `spec`."""
  regression = spec.is_regression
  terms = {
      "task": Term(
          _mse_task if regression else _cross_entropy, 1.0 - spec.kd_weight
      )
  }
  if not regression:
    terms["accuracy"] = Term(_accuracy, None)
  if spec.kd_weight > 0:
    kd = (
        _kd_mse
        if regression
        else functools.partial(_kd_kl, rho=spec.kd_temperature)
    )
    terms["kd"] = Term(kd, spec.kd_weight)
  if spec.pkd_weight > 0:
    terms["pkd"] = Term(
        functools.partial(_pkd, spec=spec), spec.pkd_weight, mask="rows"
    )
  if spec.crd_weight > 0:
    terms["crd"] = Term(
        crd_term.term_fn(spec),
        spec.crd_weight,
        per_batch=spec.crd_batch_scaled,
        mask="rows",
    )
  targets = crd_term.pick(TARGETS, spec.task_kind, "task kind")
  return Objective(
      spec=spec,
      terms=terms,
      targets=targets,
      write_bank=crd_term.bank_writer(spec),
  )


def spec_from_settings(
    s: settings_lib.Settings,
    *,
    task_kind: str,
    num_student: int,
    num_teacher: int,
    num_train: int,
    bank_kind: str = "momentum",
) -> Spec:
  """The settings' loss and bank, resolved against the models and data."""
  l, b = s.loss, s.bank
  if l.crd_weight > 0:
    if l.combine == "per_layer" and l.negatives == "bank":
      raise ValueError(
          "config.loss.combine = 'per_layer' needs config.loss.negatives ="
          " 'in_batch' (the memory bank stores one concatenated vector)"
      )
    if l.negatives == "in_batch" and (
        l.objective != "info_nce" or l.positive != "current"
    ):
      raise ValueError(
          "in-batch negatives use InfoNCE with current positives: set"
          " config.loss.objective='info_nce' and config.loss.positive="
          "'current'"
      )
  # Ranges (K >= 1, beta in [0, 1], ...) are checked in settings.from_config.
  return Spec(
      task_kind=task_kind,
      bank_kind=bank_kind,
      kd_weight=l.kd_weight,
      kd_temperature=l.kd_temperature,
      crd_weight=l.crd_weight,
      pkd_weight=l.pkd_weight,
      temperature=l.temperature,
      objective=l.objective,
      negatives=l.negatives,
      pooling=l.pooling,
      combine=l.combine,
      positive=l.positive,
      student_layers=tuple(range(1, num_student + 1)),
      teacher_layers=teacher_layer_ids(
          l.teacher_layers, num_student=num_student, num_teacher=num_teacher
      ),
      num_negatives=b.num_negatives,
      momentum=b.momentum,
      label_aware=b.label_aware,
      regression_gap=b.regression_gap,
      num_train_examples=num_train,
      shared_negatives=b.shared_negatives,
      crd_batch_scaled=l.crd_batch_scaled,
  )


def teacher_layer_ids(
    spec: str | Sequence[int], *, num_student: int, num_teacher: int
) -> tuple[int, ...]:
  """config.loss.teacher_layers ('even' | 'odd' | explicit) -> 1-based ids."""
  if isinstance(spec, str):
    variants = {"even": "paper", "odd": "released"}
    if spec not in variants:
      raise ValueError(
          f"config.loss.teacher_layers = {spec!r}; use 'even', 'odd' or a"
          " tuple of 1-based teacher layers"
      )
    ids = losses.teacher_layer_map(
        num_student_layers=num_student,
        num_teacher_layers=num_teacher,
        variant=variants[spec],
    )
  else:
    ids = losses.check_layer_ids(list(spec), num_layers=num_teacher)
    if len(ids) != num_student:
      raise ValueError(
          f"config.loss.teacher_layers has {len(ids)} layers but the student"
          f" has {num_student}: one teacher layer per student layer"
      )
  return tuple(ids)
