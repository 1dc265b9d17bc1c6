"""Memory bank of projected vectors, sharded over the mesh's data axis.

State (METHOD.md "Memory bank"; CRD `ContrastMemory`, released code):
  MemoryBank(vectors [N, P] float32, labels [N], valid [N] bool, ptr [] int32)
Fine-tuning keeps two banks (M_s, M_t), one slot per training example,
indexed by example id and updated with momentum m (0.5 in the released code):
M[i] <- normalize(m * M[i] + (1 - m) * z_i). Pre-training can use
`write_fifo` (MoCo-style queue, a codir_jax extension): rows go to `ptr`,
`ptr+1`, ... (mod N), the oldest overwritten first.

Layout. `vectors`, `labels`, `valid` are sharded along the slot axis over
the mesh axis `axis` (default 'data'): device d holds slots [d*N/n,
(d+1)*N/n) (`init(pad_to_multiple=n)` pads with never-valid slots); `ptr`
is replicated; `shardings(mesh)` gives the NamedShardings. With `mesh=None`
every function runs on one device (same code, no collectives;
`shard_dispatch.py`).

Sampling (`sample_negatives`; inside the losses of `bank_losses.py`). For
query i the eligible slots are E_i = {j : valid_j, j != id_i, and in
label-aware mode label_eligible(y_i, label_j)} (classification: label_j !=
y_i; regression: |label_j - y_i| > label_gap). K negatives are drawn
uniformly from E_i, without replacement when |E_i| >= K and with
replacement otherwise (METHOD.md; `sampling.draw_ranks`): u_ik in
{0..|E_i|-1} is the global rank of the drawn slot among E_i in slot order.
Each device counts its eligible slots, the counts are all-gathered ([n, B]
int32), and the device whose shard holds rank u_ik finds the slot locally
with a searchsorted over its cumulative count. u comes from the replicated
key with a device-independent shape and ranks follow the global slot
order, so the drawn slots (and the losses) are the SAME on 1 and n devices.
A query with no eligible slot gets K masked negatives (InfoNCE loss exactly
0 for that row, see contrastive.py). Cost per device: a [B, N/n]
eligibility mask and int32 cumulative count (5*B*N/n bytes, e.g. 64 MB for
B=32, N=400k on one device), B*K*log2(N/n) searchsorted steps, and the
replicated rank draw (sampling.py).

Communication (n devices, s bytes per query element): `sample_negatives`
all-reduces the [B, K] int32 ids, 2*4*B*K*(n-1)/n; `write` / `write_fifo`
all-gather the written rows, ids, labels and mask, (B*P*s + 9*B)*(n-1)/n;
`read` all-reduces [B, P] f32, 2*4*B*P*(n-1)/n. The bank is state, not a
parameter: the losses stop gradients into it.
"""

from __future__ import annotations

import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as PS

from codir_jax.losses import representations
from codir_jax.losses import bank_sampling
from codir_jax.losses import shard_dispatch

# Released code (CRD): momentum 0.5, K = 100 negatives.
DEFAULT_MOMENTUM = 0.5
DEFAULT_NUM_NEGATIVES = bank_sampling.DEFAULT_NUM_NEGATIVES
# The sampler is part of the bank's API (state: init, write, read, sample).
sample_negatives = bank_sampling.sample_negatives


@flax.struct.dataclass
class MemoryBank:
  """vectors [N, P] f32, labels [N], valid [N] bool, ptr [] int32."""

  vectors: jax.Array
  labels: jax.Array
  valid: jax.Array
  ptr: jax.Array

  @property
  def num_slots(self) -> int:
    return self.vectors.shape[0]


def init(
    rng: jax.Array,
    *,
    num_slots: int,
    dim: int,
    labels: jax.Array | None = None,
    all_valid: bool = False,
    pad_to_multiple: int = 1,
    label_dtype=jnp.int32,
) -> MemoryBank:
  """CRD initialisation: vectors ~ U(-s, s), s = 1/sqrt(P/3) (CRD memory.py).

  Args:
    rng: PRNG key.
    num_slots: N, number of real slots (training examples / queue length).
    dim: P.
    labels: [N] labels of the whole training set (known up-front in
      fine-tuning), or None (zeros of `label_dtype`; set them in `write`).
    all_valid: False (default): no slot is eligible until written. True:
      every real slot is eligible from step 0, as in the released code/CRD,
      which samples from the randomly initialised bank from the first step.
    pad_to_multiple: pad N up to a multiple (the number of devices on the
      bank axis); padded slots are never valid.
    label_dtype: dtype of the zero labels when `labels` is None.

  Returns:
    MemoryBank with ptr = 0.
  """
  n_pad = int(math.ceil(num_slots / pad_to_multiple) * pad_to_multiple)
  std = 1.0 / math.sqrt(dim / 3.0)
  vectors = jax.random.uniform(rng, (n_pad, dim), jnp.float32, -std, std)
  if labels is None:
    labels = jnp.zeros((n_pad,), label_dtype)
  else:
    labels = jnp.asarray(labels)
    if labels.shape != (num_slots,):
      raise ValueError(f"labels {labels.shape} != ({num_slots},)")
    labels = jnp.pad(labels, (0, n_pad - num_slots))
  valid = (jnp.arange(n_pad) < num_slots) & all_valid
  return MemoryBank(
      vectors=vectors, labels=labels, valid=valid, ptr=jnp.zeros((), jnp.int32)
  )


def shardings(mesh: jax.sharding.Mesh, *, axis: str = "data") -> MemoryBank:
  """NamedShardings of a bank: slot axis over `axis`, ptr replicated."""
  return MemoryBank(
      vectors=NamedSharding(mesh, PS(axis, None)),
      labels=NamedSharding(mesh, PS(axis)),
      valid=NamedSharding(mesh, PS(axis)),
      ptr=NamedSharding(mesh, PS()),
  )


def _scatter_local(
    vec, lab, val, slots, new_vecs, new_labels, keep, momentum, *, axis
):
  n_local = vec.shape[0]
  local = slots - shard_dispatch.offset(n_local, axis)  # [B]
  inside = keep & (local >= 0) & (local < n_local)
  idx = jnp.where(inside, local, n_local)  # out of range -> dropped
  new = jnp.asarray(new_vecs, jnp.float32)
  if momentum is not None:
    old = vec[jnp.clip(local, 0, n_local - 1)]  # [B, P]
    new = representations.l2_normalize(momentum * old + (1.0 - momentum) * new)
  vec = vec.at[idx].set(new, mode="drop")
  val = val.at[idx].set(True, mode="drop")
  if new_labels is not None:
    lab = lab.at[idx].set(new_labels.astype(lab.dtype), mode="drop")
  return vec, lab, val


def _scatter(bank, slots, vectors, labels, keep, momentum, mesh, axis):
  fn = functools.partial(_scatter_local, momentum=momentum)
  if labels is None:
    fn2 = lambda v, l, a, s, x, k, *, axis: fn(
        v, l, a, s, x, None, k, axis=axis
    )
    others = (slots, vectors, keep)
  else:
    fn2 = fn
    others = (slots, vectors, labels, keep)
  vec, lab, val = shard_dispatch.run_sharded(
      fn2,
      mesh=mesh,
      axis=axis,
      bank_args=(bank.vectors, bank.labels, bank.valid),
      other_args=others,
      out_specs=("bank", "bank", "bank"),
  )
  return bank.replace(vectors=vec, labels=lab, valid=val)


def _keep(mask, b):
  return jnp.ones((b,), bool) if mask is None else jnp.asarray(mask, bool)


def write(
    bank: MemoryBank,
    *,
    ids: jax.Array,
    vectors: jax.Array,
    momentum: float = DEFAULT_MOMENTUM,
    mask: jax.Array | None = None,
    labels: jax.Array | None = None,
    mesh: jax.sharding.Mesh | None = None,
    axis: str = "data",
) -> MemoryBank:
  """Momentum write by example id (CRD / released code), marks slots valid.

  M[ids_b] <- normalize(m * M[ids_b] + (1 - m) * vectors_b) for kept b.
  As in CRD, a slot's first write also blends with its random init.

  Args:
    bank: the bank.
    ids: [B] int example ids (slots). Kept ids must be unique in the batch.
    vectors: [B, P] new vectors (stop-gradient-ed by the caller).
    momentum: m (0.5 released code; 0 = overwrite, then normalise).
    mask: [B] bool, True = write (False on padding rows); None = all.
    labels: [B] labels to store alongside, or None (keep stored labels).
    mesh, axis: shard the slot axis over `axis` of `mesh`; None = 1 device.

  Returns:
    The updated bank (ptr unchanged).
  """
  if vectors.shape != (ids.shape[0], bank.vectors.shape[1]):
    raise ValueError(
        f"vectors {vectors.shape} vs ids {ids.shape}, bank {bank.vectors.shape}"
    )
  keep = _keep(mask, ids.shape[0])
  vectors = jax.lax.stop_gradient(vectors)
  return _scatter(
      bank,
      jnp.asarray(ids, jnp.int32),
      vectors,
      labels,
      keep,
      momentum,
      mesh,
      axis,
  )


def write_fifo(
    bank: MemoryBank,
    *,
    vectors: jax.Array,
    mask: jax.Array | None = None,
    labels: jax.Array | None = None,
    mesh: jax.sharding.Mesh | None = None,
    axis: str = "data",
) -> MemoryBank:
  """Queue write (pre-training extension): kept rows go to ptr, ptr+1, ... mod N.

  The kept rows are packed in batch order (masked rows take no slot), the
  oldest entries are overwritten first, and ptr <- (ptr + #kept) mod N.
  Vectors are stored as given (no momentum). Requires B <= N.

  Args:
    bank: the bank.
    vectors: [B, P].
    mask: [B] bool (True = enqueue) or None.
    labels: [B] or None.
    mesh, axis: see `write`.

  Returns:
    The updated bank.
  """
  b = vectors.shape[0]
  n = bank.num_slots
  if b > n or vectors.shape[1] != bank.vectors.shape[1]:
    raise ValueError(
        f"vectors {vectors.shape} do not fit bank {bank.vectors.shape}"
    )
  keep = _keep(mask, b)
  rank = jnp.cumsum(keep.astype(jnp.int32)) - 1  # [B]
  slots = (bank.ptr + rank) % n
  vectors = jax.lax.stop_gradient(vectors)
  new = _scatter(bank, slots, vectors, labels, keep, None, mesh, axis)
  return new.replace(
      ptr=((bank.ptr + jnp.sum(keep, dtype=jnp.int32)) % n).astype(jnp.int32)
  )


def _read_local(vec, ids, *, axis):
  n_local = vec.shape[0]
  local = ids - shard_dispatch.offset(n_local, axis)
  inside = (local >= 0) & (local < n_local)
  rows = jnp.where(inside[:, None], vec[jnp.clip(local, 0, n_local - 1)], 0.0)
  return shard_dispatch.psum(rows, axis)


def read(
    bank: MemoryBank, *, ids: jax.Array, mesh=None, axis: str = "data"
) -> jax.Array:
  """M[ids] (the released code's positive: the other side's bank entry).

  Args:
    ids: [B] int slot ids (must be in range).

  Returns:
    [B, P] float32, stop-gradient-ed; communication 4*B*P*2(n-1)/n bytes.
  """
  vec = jax.lax.stop_gradient(bank.vectors)
  return shard_dispatch.run_sharded(
      _read_local,
      mesh=mesh,
      axis=axis,
      bank_args=(vec,),
      other_args=(jnp.asarray(ids, jnp.int32),),
      out_specs="rep",
  )
