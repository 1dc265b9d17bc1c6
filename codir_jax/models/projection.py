"""CoDIR's projection heads: pooled layers -> P-dim contrastive vectors.

METHOD.md, "Intermediate representation": the pooled layers of each model
are concatenated ([B, L*D]) and mapped by a learned linear head per side to
P dimensions (released code: P = 128), then L2-normalised by the loss code.
Both heads train with the student and are dropped at export. The
`per_layer` ablation has one head per mapped layer instead ([B, L, D] ->
[B, L, P]). The module only holds the parameters: the maps are the pure
functions `representations.project` / `project_per_layer` of the equation
table in codir_jax/losses/__init__.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from codir_jax.losses import representations


class ProjectionHead(nnx.Module):
  """Linear map of pooled layer states to the contrastive space.

  Attributes:
    per_layer: one [D, P] map per layer instead of one [L*D, P] map.
  """

  def __init__(
      self,
      num_layers: int,
      hidden_size: int,
      proj_dim: int,
      *,
      per_layer: bool,
      rngs: nnx.Rngs,
  ):
    self.per_layer = per_layer
    init = nnx.initializers.lecun_normal()
    if per_layer:
      shape = (num_layers, hidden_size, proj_dim)
      bias_shape = (num_layers, proj_dim)
    else:
      shape = (num_layers * hidden_size, proj_dim)
      bias_shape = (proj_dim,)
    self.kernel = nnx.Param(init(rngs.params(), shape, jnp.float32))
    self.bias = nnx.Param(jnp.zeros(bias_shape, jnp.float32))

  def __call__(self, pooled: jax.Array) -> jax.Array:
    """Projects pooled states.

    Args:
      pooled: [B, L, D] pooled hidden states of the L mapped layers.

    Returns:
      [B, P] (concatenated) or [B, L, P] (per layer), float32.
    """
    kernel, bias = self.kernel[...], self.bias[...]
    if self.per_layer:
      return representations.project_per_layer(pooled, kernel=kernel, bias=bias)
    return representations.project(
        representations.concat_layers(pooled), kernel=kernel, bias=bias
    )
