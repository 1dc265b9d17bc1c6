"""Activation rematerialisation of the encoder's layers (`student.remat`).

With a policy set, each Transformer layer runs under `nnx.remat`
(`jax.checkpoint`): the backward pass recomputes the layer's activations
from its input instead of keeping them all from the forward pass, trading
compute for memory. The numbers are the same as without it (the same ops on
the same inputs; only XLA's fusion may differ, at float rounding).

| name            | what the backward keeps of a layer                     |
|-----------------|--------------------------------------------------------|
| ''              | everything (no remat, the default)                     |
| 'full'          | only the layer's input: all else is recomputed         |
|                 | (`jax.checkpoint_policies.nothing_saveable`)           |
| 'dots'          | every matmul output; elementwise ops (GELU, LayerNorm, |
|                 | softmax, dropout) are recomputed (`dots_saveable`)     |
| 'dots_no_batch' | the weight matmuls (Q/K/V, output, FFN); the attention |
|                 | einsums (batch dims, [B, H, T, T]) are recomputed      |
|                 | (`dots_with_no_batch_dims_saveable`)                   |

Most memory is saved by 'full' (one [B, T, D] array per layer), most
compute by 'dots'; 'dots_no_batch' drops the T^2 attention tensors, the
largest ones at long sequence lengths.
"""

from __future__ import annotations

from typing import Any, Callable

from flax import nnx
import jax

POLICIES: dict[str, Callable[..., bool] | None] = {
    "": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def check(name: str) -> str:
  if name not in POLICIES:
    raise ValueError(
        f"remat policy {name!r}; choose from {sorted(POLICIES)} ('' = off)"
    )
  return name


def layer_call(name: str, deterministic: bool) -> Callable[..., Any]:
  """`(layer, x, mask_bias, rng) -> layer(...)`, under `name`'s policy.

  `deterministic` is a Python bool, closed over (static under remat).
  """

  def call(layer, x, mask_bias, rng):
    return layer(x, mask_bias, deterministic=deterministic, rng=rng)

  if not check(name):
    return call
  return nnx.remat(call, policy=POLICIES[name], prevent_cse=True)


def set_policy(model: nnx.Module, name: str) -> nnx.Module:
  """Sets the remat policy of `model`'s encoder (an `Encoder` or a head).

  Meant for a module merged inside a traced step (the train step's
  student); the attribute is static, so it is part of the graph.
  """
  encoder = getattr(model, "encoder", model)
  if not hasattr(encoder, "layers"):
    raise TypeError(f"{type(model).__name__} has no encoder layers to remat")
  encoder.remat = check(name)
  return model
