"""Builds a shallower student from a teacher by copying layers.

The student keeps the teacher's embeddings, pooler and head and a subset of
its Transformer layers (the paper's 12 -> 6 initialisation takes every other
layer). Arrays are copied, so donating the student's buffers in a jitted
train step never invalidates the teacher's.
"""

from __future__ import annotations

from collections.abc import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from codir_jax.models.encoder import Encoder
from codir_jax.models.heads import MaskedLM
from codir_jax.models.heads import SequenceClassifier

Model = Encoder | SequenceClassifier | MaskedLM


def default_layers(num_layers: int) -> list[int]:
  """Every other layer, 1-based: 6 -> [2, 4, 6]; 12 -> [2, 4, ..., 12]."""
  return list(range(2, num_layers + 1, 2))


def _check_layers(layers: Sequence[int], num_layers: int) -> list[int]:
  layers = list(layers)
  if not layers:
    raise ValueError(
        f"No student layers selected (teacher has {num_layers} layers)."
    )
  for l in layers:
    if isinstance(l, bool) or not isinstance(l, int):
      raise ValueError(f"Layer indices must be ints, got {l!r}.")
    if not 1 <= l <= num_layers:
      raise ValueError(
          f"Layer {l} out of range: teacher layers are 1..{num_layers} "
          "(1-based, HF numbering; 0 is the embedding output)."
      )
  if any(b <= a for a, b in zip(layers, layers[1:])):
    raise ValueError(f"Layers must be strictly increasing, got {layers}.")
  return layers


def make_student(teacher: Model, layers: Sequence[int] | None = None) -> Model:
  """Returns a model of the teacher's class with the chosen layers.

  Args:
    teacher: an `Encoder`, `SequenceClassifier` or `MaskedLM`.
    layers: 1-based teacher layer numbers (HF numbering, so student layer i
      is teacher layer `layers[i-1]` and `student.hidden_states[i]` starts
      from `teacher.hidden_states[layers[i-1]]`'s weights); strictly
      increasing. Default: every other layer (`default_layers`).

  Raises:
    ValueError: empty, out-of-range, non-int or non-increasing layers.
  """
  n = teacher.config.num_layers
  layers = _check_layers(default_layers(n) if layers is None else layers, n)
  config = teacher.config.replace(num_layers=len(layers))
  if isinstance(teacher, SequenceClassifier):
    build = lambda: SequenceClassifier(
        config, teacher.num_labels, rngs=nnx.Rngs(0)
    )
  elif isinstance(teacher, MaskedLM):
    build = lambda: MaskedLM(config, rngs=nnx.Rngs(0))
  elif isinstance(teacher, Encoder):
    build = lambda: Encoder(
        config, rngs=nnx.Rngs(0), add_pooler=teacher.pooler is not None
    )
  else:
    raise TypeError(f"Not a codir_jax model: {type(teacher).__name__}.")
  graphdef, state = nnx.split(nnx.eval_shape(build))
  params = nnx.to_pure_dict(nnx.state(teacher, nnx.Param))
  enc = params if isinstance(teacher, Encoder) else params["encoder"]
  enc["layers"] = {i: enc["layers"][l - 1] for i, l in enumerate(layers)}
  params = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
  nnx.replace_by_pure_dict(state, params)
  return nnx.merge(graphdef, state)
