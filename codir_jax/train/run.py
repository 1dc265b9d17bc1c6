"""`Run`: what the loop trains and how to feed and evaluate it.

Built by `glue_run.build_run` (fine-tuning) and `pretrain_run.build_run`
(CoDIR-Pre) from the settings; consumed by `loop.fit`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from flax import nnx
from jax.sharding import Mesh
import numpy as np

from codir_jax.train import forward
from codir_jax.train import settings


@dataclasses.dataclass
class Run:
  """Everything `fit` needs, resolved from the settings."""

  workdir: str
  mode: str
  mesh: Mesh
  rules: dict[str, str | None]
  model: nnx.Module  # The model being trained (student, or the teacher).
  teacher_model: nnx.Module | None
  graphs: forward.Graphs
  params: dict[str, Any]
  objective: Any  # objective.Objective: the term table and bank write.
  optim: settings.OptimSettings
  batch_size: int
  seed: int
  # () -> iterator of host batches with get_state() / set_state().
  make_iterator: Callable[[], Any]
  # (student graphdef, student params) -> {metric: value, 'score': ...}.
  evaluate: Callable[[Any, Any], dict[str, float]]
  tokenizer: Any
  bank_slots: int  # Memory-bank slots N (0 without a bank).
  bank_labels: np.ndarray | None  # [N] labels known up-front, or None.
  bank_all_valid: bool
  ckpt: settings.CheckpointSettings
  log_every: int
  eval_every: int
  # Stop after this many dev evaluations in a row without a new best score
  # (0 = train for all steps); the best model is exported to best/.
  patience: int
  tensorboard: bool
  export_name: str
  fingerprint: dict[str, Any]  # Settings a resumed checkpoint must share.
  # Remat, gradient accumulation, teacher sharding (off: the plain step).
  scale: settings.Scale = settings.Scale()
  # Offline KD (teacher_cache.py): ('hit' | 'built' | 'off', file or '').
  teacher_cache: tuple[str, str] = ("off", "")

  @property
  def loss(self) -> Any:
    """The objective's resolved spec (layers, weights, bank kind)."""
    return self.objective.spec
