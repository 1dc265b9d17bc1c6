"""The train state and its shardings.

Everything that changes during training is a field of `TrainState`; the
frozen teacher's parameters are a separate argument of the step and are
never part of the state, the optimizer or a checkpoint.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax
from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from codir_jax import sharding


@flax.struct.dataclass
class TrainState:
  """Pytree of all mutable training state.

  Attributes:
    step: int32 scalar, number of updates applied.
    params: `{"student": nnx.State, "proj_s": nnx.State, "proj_t":
      nnx.State}`; the projection heads exist in distillation runs only.
    opt_state: optax state over `params`.
    bank: `{"student": MemoryBank, "teacher": MemoryBank}` when a memory
      bank is used, else `{}`.
    rng: uint32[2] base key; step keys are `fold_in(rng, step)`.
    log_z: float32[2], the CRD NCE normalisers (student-anchor and
      teacher-anchor directions), NaN until the first step sets them.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  bank: Any
  rng: jax.Array
  log_z: jax.Array


def create(params: Any, tx: Any, bank: Any, rng: jax.Array) -> TrainState:
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      bank=bank,
      rng=rng,
      log_z=jnp.full((2,), jnp.nan, jnp.float32),
  )


def _is_variable(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


def param_specs(tree: Any, mesh: Mesh, rules: Mapping[str, str | None]) -> Any:
  """Specs for a tree of nnx Variables (params or optimizer moments).

  Variables are mapped through their `out_sharding` logical names; any
  other leaf (optimizer counters, scalars) is replicated. The result has the
  same structure as `tree`, with a PartitionSpec in place of every array.
  """

  def spec(x):
    if _is_variable(x):
      names = x.get_metadata().get("out_sharding")
      value = x.get_value()
      return x.replace(
          sharding.logical_to_spec(names, value.shape, mesh, rules)
      )
    return P()

  return jax.tree.map(spec, tree, is_leaf=_is_variable)


def teacher_specs(
    tree: Any, mesh: Mesh, rules: Mapping[str, str | None]
) -> Any:
  """FSDP specs of the frozen teacher's params (config teacher.shard_params).

  Each array's logical spec (`param_specs`, e.g. FFN over 'model') also
  splits one dimension over the 'data' axis (`sharding.fsdp_spec`), so a
  device holds about 1/|data| of the teacher instead of all of it. Without
  the option the loop replicates the teacher.
  """
  specs = param_specs(tree, mesh, rules)

  def spec(s, x):
    return sharding.fsdp_spec(s, x.shape, mesh)

  return jax.tree.map(spec, specs, tree, is_leaf=lambda x: isinstance(x, P))


def state_specs(
    abstract: TrainState,
    mesh: Mesh,
    rules: Mapping[str, str | None],
    bank_specs: Any,
) -> TrainState:
  """PartitionSpecs for every leaf of a TrainState (same structure)."""
  return TrainState(
      step=P(),
      params=param_specs(abstract.params, mesh, rules),
      opt_state=param_specs(abstract.opt_state, mesh, rules),
      bank=bank_specs,
      rng=P(),
      log_z=P(),
  )
