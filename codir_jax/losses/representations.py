"""Intermediate representations: pooling, layer map, stacking, projection.

CoDIR (Sun et al., EMNLP 2020, Sec. 3) contrasts one vector per example and
model, built from the hidden states of several layers (METHOD.md,
"Intermediate representation"):

  h_l      = pool(hidden_states[l], mask)                 [B, D]  per layer l
  H        = concat_l h_l                                 [B, L*D]
  z        = normalize(H @ W + b)                         [B, P]

Defaults follow the paper (METHOD.md column "paper"); the released code
(intersun/CoDIR) is a variant:

| choice          | paper (default)                  | released code      |
|-----------------|----------------------------------|--------------------|
| pooling         | masked mean over valid tokens    | first token        |
| teacher layers  | every other layer, 2,4,..,Lt     | 1,3,..,Lt-1        |
| student layers  | all 1..Ls                        | all 1..Ls          |

Layer ids use the Hugging Face numbering: `hidden_states[0]` is the
embedding output, `hidden_states[l]` the output of layer l (1-based).

The projection heads W, b are trainable parameters owned by the train step;
this module only provides the pure `project` function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

# Default eps of the L2 normalisation: the norm is clamped to >= eps, so an
# all-zero vector (e.g. a padded row) maps to 0 with finite gradients.
L2_EPS = 1e-12


def upcast(x: jax.Array) -> jax.Array:
  """Casts to the compute dtype: at least float32 (bf16/f16 -> f32; f64 kept).

  All losses compute in float32 (STYLE.md sec. 5); float64 inputs stay
  float64 so gradient checks can run under `jax.enable_x64`.
  """
  x = jnp.asarray(x)
  dtype = jnp.promote_types(x.dtype, jnp.float32)
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.float32
  return x.astype(dtype)


def masked_mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Masked mean over tokens (paper default, METHOD.md).

  h_b = sum_t m_bt x_btd / max(sum_t m_bt, 1)

  A row without any valid token (a padded example) gives the zero vector,
  with finite gradients.

  Args:
    hidden: [B, T, D] hidden states (any float dtype; math in float32).
    mask: [B, T] attention mask ({0,1} ints or bool; nonzero = valid token).

  Returns:
    [B, D] float32.
  """
  if hidden.ndim != 3 or mask.shape != hidden.shape[:2]:
    raise ValueError(
        f"expected hidden [B,T,D] and mask [B,T], got {hidden.shape} and "
        f"{mask.shape}"
    )
  keep = jnp.asarray(mask) != 0  # [B, T]
  x = jnp.where(keep[..., None], upcast(hidden), 0.0)
  count = jnp.sum(keep, axis=1, dtype=jnp.float32)[:, None]  # [B, 1]
  return jnp.sum(x, axis=1) / jnp.maximum(count, 1.0)


def first_token_pool(
    hidden: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
  """First token (`<s>` / [CLS]) pooling (released-code variant, METHOD.md).

  Args:
    hidden: [B, T, D] hidden states.
    mask: unused; accepted so both poolings share one signature.

  Returns:
    [B, D] float32 = hidden[:, 0].
  """
  del mask
  if hidden.ndim != 3:
    raise ValueError(f"expected hidden [B,T,D], got {hidden.shape}")
  return upcast(hidden[:, 0])


POOLINGS: dict[str, Callable[..., jax.Array]] = {
    "mean": masked_mean_pool,  # paper (default)
    "first": first_token_pool,  # released code
}


def get_pooling(name: str) -> Callable[..., jax.Array]:
  """Returns the pooling function `name` in POOLINGS; raises on unknown."""
  try:
    return POOLINGS[name]
  except KeyError:
    raise ValueError(
        f"unknown pooling {name!r}; choose from {sorted(POOLINGS)}"
    ) from None


def check_layer_ids(layer_ids: Sequence[int], *, num_layers: int) -> list[int]:
  """Validates 1-based layer ids (1..num_layers, unique); returns them as ints."""
  ids = [int(i) for i in layer_ids]
  if not ids:
    raise ValueError("layer_ids is empty")
  if len(set(ids)) != len(ids):
    raise ValueError(f"duplicate layer ids: {ids}")
  bad = [i for i in ids if not 1 <= i <= num_layers]
  if bad:
    raise ValueError(f"layer ids {bad} outside 1..{num_layers}")
  return ids


def student_layer_ids(*, num_student_layers: int) -> list[int]:
  """All student layers 1..Ls (paper and released code agree, METHOD.md)."""
  if num_student_layers < 1:
    raise ValueError(
        f"num_student_layers must be >= 1, got {num_student_layers}"
    )
  return list(range(1, num_student_layers + 1))


def teacher_layer_map(
    *,
    num_student_layers: int,
    num_teacher_layers: int,
    variant: str = "paper",
) -> list[int]:
  """Teacher layer matched with each student layer 1..Ls (1-based HF ids).

  With s = Lt / Ls (must be an integer):
    variant="paper"    (default, METHOD.md): teacher layer s*j for student j,
                       e.g. 12->6: [2, 4, 6, 8, 10, 12];
    variant="released" (intersun/CoDIR):     teacher layer s*(j-1)+1,
                       e.g. 12->6: [1, 3, 5, 7, 9, 11].
  A custom list is validated with `check_layer_ids`.

  Returns:
    list of Ls teacher layer ids; element j-1 is paired with student layer j.
  """
  ls, lt = num_student_layers, num_teacher_layers
  if ls < 1 or lt < ls or lt % ls:
    raise ValueError(
        f"need 1 <= Ls <= Lt and Lt % Ls == 0, got Ls={ls}, Lt={lt}; pass an "
        "explicit list through check_layer_ids instead"
    )
  step = lt // ls
  maps = {
      "paper": [step * j for j in range(1, ls + 1)],
      "released": [step * (j - 1) + 1 for j in range(1, ls + 1)],
  }
  if variant not in maps:
    raise ValueError(f"unknown variant {variant!r}; choose from {sorted(maps)}")
  return check_layer_ids(maps[variant], num_layers=lt)


def stack_pooled_layers(
    hidden_states: Sequence[jax.Array],
    *,
    layer_ids: Sequence[int],
    mask: jax.Array,
    pooling: str = "mean",
) -> jax.Array:
  """Pools the selected layers and stacks them.

  out[:, j] = pool(hidden_states[layer_ids[j]], mask)

  Args:
    hidden_states: tuple of L+1 arrays [B, T, D] (index 0 = embeddings).
    layer_ids: the 1-based layers to use (validated against L).
    mask: [B, T] attention mask.
    pooling: "mean" (paper, default) or "first" (released code).

  Returns:
    [B, len(layer_ids), D] float32.
  """
  ids = check_layer_ids(layer_ids, num_layers=len(hidden_states) - 1)
  pool = get_pooling(pooling)
  return jnp.stack([pool(hidden_states[i], mask) for i in ids], axis=1)


def concat_layers(stacked: jax.Array) -> jax.Array:
  """[B, L, D] -> [B, L*D] ("concatenate all layers", paper Sec. 3)."""
  if stacked.ndim != 3:
    raise ValueError(f"expected [B,L,D], got {stacked.shape}")
  b, l, d = stacked.shape
  return stacked.reshape(b, l * d)  # [B, L*D]


def l2_normalize(
    x: jax.Array, *, axis: int = -1, eps: float = L2_EPS
) -> jax.Array:
  """x / max(||x||_2, eps) along `axis`, in float32.

  Uses rsqrt(max(sum x^2, eps^2)), so x = 0 gives 0 with finite gradients.
  """
  x = upcast(x)
  sq = jnp.sum(x * x, axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def project(
    x: jax.Array, *, kernel: jax.Array, bias: jax.Array | None = None
) -> jax.Array:
  """Linear projection head: x @ kernel + bias, in float32.

  Args:
    x: [B, F] features (F = L*D for concatenated layers).
    kernel: [F, P].
    bias: [P] or None.

  Returns:
    [B, P] float32.
  """
  if x.shape[-1] != kernel.shape[0]:
    raise ValueError(f"x {x.shape} does not match kernel {kernel.shape}")
  y = upcast(x) @ upcast(kernel)
  if bias is not None:
    y = y + upcast(bias)
  return y


def project_per_layer(
    x: jax.Array, *, kernel: jax.Array, bias: jax.Array
) -> jax.Array:
  """One projection head per layer (per-layer ablation), in float32.

  y_l = x_l @ W_l + b_l.

  Args:
    x: [B, L, D] pooled layers.
    kernel: [L, D, P].
    bias: [L, P].

  Returns:
    [B, L, P] float32.
  """
  if x.shape[1:] != kernel.shape[:2]:
    raise ValueError(f"x {x.shape} does not match kernel {kernel.shape}")
  return jnp.einsum("bld,ldp->blp", upcast(x), upcast(kernel)) + upcast(bias)


def codir_representation(
    hidden_states: Sequence[jax.Array],
    *,
    layer_ids: Sequence[int],
    mask: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None = None,
    pooling: str = "mean",
    eps: float = L2_EPS,
) -> jax.Array:
  """z = normalize(concat_l pool(h_l) @ W + b): the CoDIR vector (Sec. 3).

  Args:
    hidden_states: tuple of L+1 arrays [B, T, D].
    layer_ids: layers to use (student: 1..Ls; teacher: `teacher_layer_map`).
    mask: [B, T] attention mask.
    kernel: [len(layer_ids)*D, P]; bias: [P] or None.
    pooling: "mean" (paper) or "first" (released code).
    eps: L2-normalisation eps.

  Returns:
    [B, P] float32, unit norm (0 for an all-zero row).
  """
  stacked = stack_pooled_layers(
      hidden_states, layer_ids=layer_ids, mask=mask, pooling=pooling
  )
  return l2_normalize(
      project(concat_layers(stacked), kernel=kernel, bias=bias), eps=eps
  )
