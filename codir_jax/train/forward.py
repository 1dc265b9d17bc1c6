"""Model forward passes over pytrees (the NNX split at the jit boundary).

`Graphs` holds the static graph definitions of a run; parameters travel as
`nnx.State` pytrees, merged back into modules only inside traced functions
(flax nnx_toy_examples/01_functional_api.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import nnx
import jax

from codir_jax.models import remat as remat_lib


@dataclasses.dataclass(frozen=True)
class Graphs:
  """Static graph definitions; `proj_*`/`teacher` are None when unused."""

  student: Any
  teacher: Any = None
  proj_s: Any = None
  proj_t: Any = None


def forward(
    graphdef: Any,
    params: Any,
    batch: dict[str, jax.Array],
    *,
    dropout_rng: jax.Array | None = None,
    remat: str = "",
):
  """(logits, outputs with `.hidden_states`) of a model on a batch.

  Deterministic (no dropout) when `dropout_rng` is None; `remat` names the
  layers' rematerialisation policy (models/remat.py; '' = none).
  """
  model = nnx.merge(graphdef, params)
  if remat:
    remat_lib.set_policy(model, remat)
  return model(
      batch["input_ids"],
      batch["attention_mask"],
      batch["token_type_ids"],
      deterministic=dropout_rng is None,
      dropout_rng=dropout_rng,
  )


def predict_step(
    params: Any, batch: dict[str, jax.Array], *, graphdef: Any
) -> jax.Array:
  """Deterministic forward: logits [B, C] (regression: [B, 1])."""
  logits, _ = forward(graphdef, params, batch)
  return logits
