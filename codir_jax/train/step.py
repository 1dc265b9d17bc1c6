"""The CoDIR train step (one jit) and the evaluation forward.

`train_step` does, in order (STYLE.md sec. 3): step key; frozen teacher
forward (outside the gradient, stop_gradient); student forward/backward with
the weighted objective

  L = (1 - beta) CE(y, s) + beta rho^2 KL(t/rho || s/rho)
      + lambda L_crd + mu L_pkd                     (METHOD.md; regression:
                                                     CE -> MSE(s, y),
                                                     KD -> MSE(s, t))

(released code, `crd_batch_scaled`: lambda / B in place of lambda, B = the
valid rows of the batch; `shared_negatives`: both directions score the same
negative ids.)

optax update; memory-bank write; step + 1. Plain fine-tuning of a teacher
(`finetune_teacher`) is the same step with no teacher: L = CE.
Pre-training (CoDIR-Pre, `task_kind='mlm'`): CE and KD are taken over the
masked tokens (`batch["mlm_mask"]`, targets `batch["mlm_labels"]`), and the
memory banks are FIFO queues (`bank_kind='fifo'`).

Each term is a mean over its own mask: valid rows of the global batch
(padding rows of the last batch have `valid == False`) for per-example
terms, masked tokens for MLM terms. Metrics come back as
`{name: (sum, count)}`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from codir_jax import losses
from codir_jax.losses import memory_bank
from codir_jax.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class LossSettings:
  """Static settings of the objective (from config.loss and config.bank)."""

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
  # Released code: one set of negative ids for both directions (CRD).
  shared_negatives: bool = False
  # Released code: lambda weighs the batch-mean CRD loss while CE and KD are
  # batch sums divided by B (fairseq), so lambda acts as lambda / B.
  crd_batch_scaled: bool = False

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
class Graphs:
  """Static graph definitions; `proj_*`/`teacher` are None when unused."""

  student: Any
  teacher: Any = None
  proj_s: Any = None
  proj_t: Any = None


def _forward(graphdef, params, batch, *, dropout_rng=None):
  model = nnx.merge(graphdef, params)
  return model(
      batch["input_ids"],
      batch["attention_mask"],
      batch["token_type_ids"],
      deterministic=dropout_rng is None,
      dropout_rng=dropout_rng,
  )


def _pooled(out, layer_ids, batch, pooling):
  return losses.stack_pooled_layers(
      out.hidden_states,
      layer_ids=layer_ids,
      mask=batch["attention_mask"],
      pooling=pooling,
  )  # [B, N, D]


def _project(graphdef, params, pooled):
  z = nnx.merge(graphdef, params)(pooled)  # [B, P] or [B, N, P]
  return losses.l2_normalize(z)


def _direction(cfg, anchors, positives, bank, ids, batch, log_z, rng, mesh):
  """One direction of the bank objective: anchors vs the other side's bank.

  Returns ([B] loss, log_z used (scalar; NaN when not NCE)).
  """
  common = dict(
      queries=anchors,
      positives=positives,
      bank=bank,
      rng=rng,
      query_ids=ids,
      query_labels=batch["labels"] if cfg.label_aware else None,
      num_negatives=cfg.num_negatives,
      temperature=cfg.temperature,
      label_aware=cfg.label_aware,
      label_gap=cfg.regression_gap if cfg.is_regression else None,
      mesh=mesh,
  )
  if cfg.objective == "info_nce":
    return memory_bank.bank_info_nce(**common), log_z
  num_data = cfg.num_train_examples

  def first_batch_log_z():
    # CRD freezes Z on the first batch; computed only while log_z is NaN.
    return memory_bank.bank_crd_log_z(
        **common, num_data=num_data, valid=batch["valid"]
    )

  log_z = jax.lax.cond(jnp.isnan(log_z), first_batch_log_z, lambda: log_z)
  return memory_bank.bank_crd_nce(**common, log_z=log_z, num_data=num_data), log_z


def _contrastive(cfg, z_s, z_t, batch, state, rng, mesh):
  """Symmetric CRD-style objective (METHOD.md): (L_s + L_t) / 2.

  Args:
    z_s, z_t: [B, P] normalised student / teacher vectors, or [B, N, P] in
      the per-layer ablation (one loss per layer, summed).

  Returns:
    ([B] loss, new log_z [2]).
  """
  valid = batch["valid"]
  if cfg.negatives == "in_batch":
    labels = batch["labels"] if cfg.label_aware else None
    gap = cfg.regression_gap if cfg.is_regression else None

    def both(a, b):
      return 0.5 * (
          losses.in_batch_info_nce(a, b, temperature=cfg.temperature,
                                   valid=valid, labels=labels, label_gap=gap)
          + losses.in_batch_info_nce(b, a, temperature=cfg.temperature,
                                     valid=valid, labels=labels,
                                     label_gap=gap)
      )

    if z_s.ndim == 2:
      return both(z_s, z_t), state.log_z
    per_layer = [both(z_s[:, l], z_t[:, l]) for l in range(z_s.shape[1])]
    return sum(per_layer), state.log_z

  if z_s.ndim != 2:
    raise ValueError("combine='per_layer' supports in-batch negatives only")
  if cfg.bank_kind == "fifo":
    # Queue slots are not example ids: no slot is the query's own.
    ids = jnp.full_like(batch["example_ids"], -1)
  else:
    ids = jnp.where(valid, batch["example_ids"], 0)
  bank_s, bank_t = state.bank["student"], state.bank["teacher"]
  if cfg.positive == "current":
    pos_for_s, pos_for_t = z_t, z_s
  else:  # Released code: the other side's bank entry, read before writing.
    pos_for_s = memory_bank.read(bank_t, ids=ids, mesh=mesh)
    pos_for_t = memory_bank.read(bank_s, ids=ids, mesh=mesh)
  key_s, key_t = jax.random.split(rng)
  if cfg.shared_negatives:
    key_t = key_s  # Same key, same labels/valid on both banks: same ids.
  loss_s, z0 = _direction(cfg, z_s, pos_for_s, bank_t, ids, batch,
                          state.log_z[0], key_s, mesh)
  loss_t, z1 = _direction(cfg, z_t, pos_for_t, bank_s, ids, batch,
                          state.log_z[1], key_t, mesh)
  return 0.5 * (loss_s + loss_t), jnp.stack([z0, z1])


def _output_terms(cfg, s_logits, t_logits, batch):
  """Task, KD and accuracy terms as {name: (values, mask)}.

  classification: CE(y, s), rho^2 KL(t/rho || s/rho) per example;
  regression: MSE(s, y), MSE(s, t) per example;
  mlm: the same CE / KD per masked token ([B, T] values, `mlm_mask`).
  """
  valid = batch["valid"]
  if cfg.task_kind == "mlm":
    mask = batch["mlm_mask"] & valid[:, None]  # [B, T]
    labels = jnp.where(mask, batch["mlm_labels"], 0)
  else:
    mask, labels = valid, batch["labels"]
  terms = {}
  if cfg.task_kind == "regression":
    terms["task"] = (losses.mse(predictions=s_logits[:, 0], targets=labels),
                     mask)
  else:
    terms["task"] = (losses.cross_entropy(logits=s_logits, labels=labels),
                     mask)
    hit = jnp.argmax(s_logits, axis=-1) == labels
    terms["accuracy"] = (hit.astype(jnp.float32), mask)
  if cfg.kd_weight > 0:
    if cfg.task_kind == "regression":
      kd = losses.mse(predictions=s_logits[:, 0], targets=t_logits[:, 0])
    else:
      kd = losses.kd_loss(student_logits=s_logits, teacher_logits=t_logits,
                          temperature=cfg.kd_temperature)
    terms["kd"] = (kd, mask)
  return terms


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    teacher_params: Any,
    *,
    graphs: Graphs,
    tx: optax.GradientTransformation,
    cfg: LossSettings,
    mesh: Any = None,
) -> tuple[TrainState, dict[str, tuple[jax.Array, jax.Array]]]:
  """One CoDIR update. See the module docstring.

  Args:
    state: the train state (donated by the caller's jit).
    batch: the global batch (API.md contract), sharded over 'data'.
    teacher_params: frozen teacher `nnx.State` (None when no teacher).
    graphs: static graph definitions.
    tx: the optimizer.
    cfg: static loss settings.
    mesh: the mesh the memory bank is sharded over (None = one device).

  Returns:
    (new state, {name: (sum, count)} metrics).
  """
  rng = jax.random.fold_in(state.rng, state.step)
  dropout_rng, bank_rng = jax.random.split(rng)
  valid = batch["valid"]

  t_logits = t_pooled = None
  if cfg.uses_teacher:
    t_logits, t_out = _forward(graphs.teacher, teacher_params, batch)
    t_logits = jax.lax.stop_gradient(t_logits)
    t_pooled = jax.lax.stop_gradient(
        _pooled(t_out, cfg.teacher_layers, batch, cfg.pooling)
    )

  def loss_fn(params):
    s_logits, s_out = _forward(
        graphs.student, params["student"], batch, dropout_rng=dropout_rng
    )
    terms = _output_terms(cfg, s_logits, t_logits, batch)  # name -> (v, m)
    aux = {}
    if cfg.pkd_weight > 0 or cfg.crd_weight > 0:
      s_pooled = _pooled(s_out, cfg.student_layers, batch, cfg.pooling)
    if cfg.pkd_weight > 0:
      terms["pkd"] = (
          losses.pkd_loss(student_pooled=s_pooled, teacher_pooled=t_pooled),
          valid,
      )
    if cfg.crd_weight > 0:
      z_s = _project(graphs.proj_s, params["proj_s"], s_pooled)
      z_t = _project(graphs.proj_t, params["proj_t"], t_pooled)
      crd, aux["log_z"] = _contrastive(
          cfg, z_s, z_t, batch, state, bank_rng, mesh
      )
      terms["crd"] = (crd, valid)
      aux["z_s"], aux["z_t"] = z_s, z_t
    weights = {"task": 1.0 - cfg.kd_weight, "kd": cfg.kd_weight,
               "pkd": cfg.pkd_weight, "crd": cfg.crd_weight}
    metrics = {n: losses.masked_sum_count(v, mask=m)
               for n, (v, m) in terms.items()}
    if cfg.crd_batch_scaled and "crd" in metrics:
      weights["crd"] = cfg.crd_weight / jnp.maximum(metrics["crd"][1], 1.0)
    loss = sum(weights[n] * s / jnp.maximum(c, 1.0)
               for n, (s, c) in metrics.items() if n in weights)
    metrics["loss"] = (loss, jnp.ones((), jnp.float32))
    return loss, (metrics, aux)

  (_, (metrics, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params
  )
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  one = jnp.ones((), jnp.float32)
  metrics["l2_grads"] = (optax.tree.norm(grads), one)
  metrics["l2_params"] = (optax.tree.norm(params), one)
  metrics["l2_updates"] = (optax.tree.norm(updates), one)
  bank, log_z = state.bank, aux.get("log_z", state.log_z)
  if cfg.uses_bank:
    ids = jnp.where(valid, batch["example_ids"], 0)
    bank = {}
    for side, z in (("student", "z_s"), ("teacher", "z_t")):
      if cfg.bank_kind == "fifo":
        bank[side] = memory_bank.write_fifo(
            state.bank[side], vectors=aux[z], mask=valid, mesh=mesh
        )
      else:
        bank[side] = memory_bank.write(
            state.bank[side], ids=ids, vectors=aux[z], mask=valid,
            momentum=cfg.momentum, mesh=mesh,
        )
  new_state = state.replace(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      bank=bank,
      log_z=log_z,
  )
  return new_state, metrics


def predict_step(
    params: Any, batch: dict[str, jax.Array], *, graphdef: Any
) -> jax.Array:
  """Deterministic forward: logits [B, C] (regression: [B, 1])."""
  logits, _ = _forward(graphdef, params, batch)
  return logits
