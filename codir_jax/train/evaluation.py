"""Dev evaluation, inference speed and GLUE prediction files.

Evaluation runs the model deterministically over a split in file order with
fixed-shape batches (padding rows are dropped by their `valid` flag), then
scores predictions with the task's GLUE metrics in NumPy.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Mapping

from flax import nnx
import jax
from jax.sharding import Mesh
import jax.numpy as jnp
import numpy as np

from codir_jax import distributed
from codir_jax import losses
from codir_jax import sharding
from codir_jax.data import metrics as glue_metrics
from codir_jax.data import pipeline
from codir_jax.data import submission
from codir_jax.data import tokenize
from codir_jax.train import forward

# Keys of a batch the model reads.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _forward(params, batch, *, graphdef):
  """Logits plus the rows' validity and ids, for the host to reorder."""
  logits = forward.predict_step(params, batch, graphdef=graphdef)
  return logits, batch["valid"], batch["example_ids"]


@functools.lru_cache(maxsize=16)
def _predict_fn(graphdef, mesh: Mesh):
  # Replicated outputs: every process gets all rows (multi-host safe).
  return jax.jit(
      functools.partial(_forward, graphdef=graphdef),
      out_shardings=sharding.replicated(mesh),
  )


def eval_batches(
    data: tokenize.TokenizedSplit, batch_size: int, mesh: Mesh
) -> pipeline.BatchIterator:
  """One pass over `data` in file order, this process's share.

  The last global batch is padded with invalid rows, so every process runs
  the same number of batches whatever the split's size.
  """
  share = distributed.data_share(mesh)
  return pipeline.BatchIterator(
      data,
      batch_size=share.local_batch(batch_size),
      shuffle=False,
      num_epochs=1,
      process_index=share.index,
      process_count=share.count,
  )


def predict(
    graphdef: Any,
    params: Any,
    data: tokenize.TokenizedSplit,
    *,
    mesh: Mesh,
    batch_size: int,
) -> np.ndarray:
  """Logits of every example of `data`, in split order: [N, C] float32."""
  fn = _predict_fn(graphdef, mesh)
  outs, ids = [], []
  for batch in eval_batches(data, batch_size, mesh):
    keys = MODEL_INPUTS + ("valid", "example_ids")
    logits, valid, example_ids = jax.device_get(
        fn(params, sharding.put_batch({k: batch[k] for k in keys}, mesh))
    )
    keep = np.asarray(valid, bool)
    outs.append(np.asarray(logits, np.float32)[keep])
    ids.append(np.asarray(example_ids)[keep])
  logits, ids = np.concatenate(outs), np.concatenate(ids)
  if len(np.unique(ids)) != len(ids) or len(ids) != len(data):
    raise RuntimeError(
        f"evaluation saw {len(ids)} rows ({len(np.unique(ids))} distinct) of"
        f" a {len(data)}-example split: the processes' shares overlap or"
        " leave gaps"
    )
  return logits[np.argsort(ids, kind="stable")]


def to_predictions(logits: np.ndarray, is_regression: bool) -> np.ndarray:
  return logits[:, 0] if is_regression else np.argmax(logits, axis=-1)


def score(
    logits: np.ndarray, data: tokenize.TokenizedSplit
) -> dict[str, float]:
  """The task's GLUE dev metrics for `logits` [N, C]."""
  preds = to_predictions(logits, data.is_regression)
  return {
      k: float(v)
      for k, v in glue_metrics.glue_metrics(
          data.task, preds, data.labels
      ).items()
  }


def _on_devices(model: nnx.Module, mesh: Mesh):
  """(graphdef, params replicated over `mesh`) of an NNX model."""
  graphdef, params = nnx.split(model)
  return graphdef, jax.device_put(params, sharding.replicated(mesh))


def evaluate_params(graphdef, params, data, *, mesh, batch_size):
  return score(
      predict(graphdef, params, data, mesh=mesh, batch_size=batch_size), data
  )


def evaluate_model(
    model: nnx.Module,
    data: tokenize.TokenizedSplit,
    *,
    mesh: Mesh,
    batch_size: int,
) -> dict[str, float]:
  """GLUE dev metrics of an NNX classifier on `data`."""
  graphdef, params = _on_devices(model, mesh)
  return evaluate_params(
      graphdef, params, data, mesh=mesh, batch_size=batch_size
  )


def compare_speed(
    data: tokenize.TokenizedSplit,
    named_models: Mapping[str, nnx.Module],
    *,
    mesh: Mesh,
    batch_size: int,
    repeats: int = 2,
) -> dict[str, float]:
  """Inference examples/s of each model over `data` (after a warm-up pass).

  All models see the same batches and shapes; the ratio of each model to
  the first one is reported too (e.g. student_vs_teacher).
  """
  out = {}
  for name, model in named_models.items():
    graphdef, params = _on_devices(model, mesh)
    predict(graphdef, params, data, mesh=mesh, batch_size=batch_size)
    t0 = time.perf_counter()
    for _ in range(repeats):
      predict(graphdef, params, data, mesh=mesh, batch_size=batch_size)
    out[f"{name}_examples_per_s"] = (
        repeats * len(data) / (time.perf_counter() - t0)
    )
  names = list(named_models)
  for name in names[1:]:
    out[f"{name}_vs_{names[0]}"] = (
        out[f"{name}_examples_per_s"] / out[f"{names[0]}_examples_per_s"]
    )
  return out


def write_predictions(
    model: nnx.Module,
    splits: Mapping[str, tokenize.TokenizedSplit],
    out_dir: str,
    *,
    mesh: Mesh,
    batch_size: int,
) -> list[str]:
  """GLUE submission files for every split in `splits` (split -> data)."""
  graphdef, params = _on_devices(model, mesh)
  files = []
  for split, data in splits.items():
    logits = predict(graphdef, params, data, mesh=mesh, batch_size=batch_size)
    preds = to_predictions(logits, data.is_regression)
    if jax.process_index() == 0:
      files.append(
          submission.write_submission(out_dir, data.task, split, preds)
      )
  return files


def _mlm_sums(params, batch, *, graphdef):
  """Masked-token CE and hits, summed: ([], [], []) float32."""
  logits = forward.predict_step(params, batch, graphdef=graphdef)
  mask = batch["mlm_mask"] & batch["valid"][:, None]  # [B, T]
  labels = jnp.where(mask, batch["mlm_labels"], 0)
  ce = losses.cross_entropy(logits=logits, labels=labels)  # [B, T]
  hit = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  m = mask.astype(jnp.float32)
  return jnp.sum(ce * m), jnp.sum(hit * m), jnp.sum(m)


@functools.lru_cache(maxsize=16)
def _mlm_fn(graphdef, mesh: Mesh):
  return jax.jit(
      functools.partial(_mlm_sums, graphdef=graphdef),
      out_shardings=sharding.replicated(mesh),
  )


def evaluate_mlm(graphdef, params, batches, *, mesh) -> dict[str, float]:
  """Masked-LM loss and accuracy over fixed host `batches`.

  Returns:
    {'mlm_loss', 'mlm_accuracy', 'score' (= mlm_accuracy)}.
  """
  fn = _mlm_fn(graphdef, mesh)
  ce = hits = count = 0.0
  for batch in batches:
    c, h, n = jax.device_get(fn(params, sharding.put_batch(batch, mesh)))
    ce, hits, count = ce + float(c), hits + float(h), count + float(n)
  if not count:
    raise ValueError("the MLM evaluation batches hold no masked token")
  return {
      "mlm_loss": ce / count,
      "mlm_accuracy": hits / count,
      "score": hits / count,
  }
