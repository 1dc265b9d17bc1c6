"""Memory bank of projected vectors, sharded over the mesh's data axis.

State (METHOD.md "Memory bank"; CRD `ContrastMemory`, released code):

  MemoryBank(vectors [N, P] float32, labels [N], valid [N] bool, ptr [] int32)

Fine-tuning keeps two banks (M_s, M_t), one slot per training example,
indexed by example id and updated with momentum m (0.5 in the released code):
  M[i] <- normalize(m * M[i] + (1 - m) * z_i).
Pre-training can use `write_fifo` (MoCo-style queue, a codir_jax extension):
rows are written at `ptr`, `ptr+1`, ... (mod N), the oldest overwritten first.

Layout. `vectors`, `labels`, `valid` are sharded along the slot axis over the
mesh axis `axis` (default 'data'): device d holds slots
[d*N/n, (d+1)*N/n) (N must divide by n; `init(pad_to_multiple=n)` pads with
slots that are never valid). `ptr` is replicated. `shardings(mesh)` gives the
NamedShardings for jit in/out_shardings. With `mesh=None` every function runs
unsharded on one device (same code path, collectives skipped).

Sampling (`sample_negatives`, and inside `bank_info_nce`/`bank_crd_nce`).
For query i the eligible slots are E_i = {j : valid_j, j != id_i, and in
label-aware mode label_eligible(y_i, label_j)} (classification: label_j !=
y_i; regression: |label_j - y_i| > label_gap). K negatives are drawn
uniformly from E_i, without replacement when |E_i| >= K and with
replacement otherwise (METHOD.md; `sampling.draw_ranks`): u_ik in
{0..|E_i|-1} is the global rank of the drawn slot among E_i in slot order. Each device counts its own
eligible slots, the counts are all-gathered ([n, B] int32), and the device
whose shard contains rank u_ik (a "stratum" = one shard's slot range) finds
the slot locally with a searchsorted over its own cumulative count. Because u
is drawn from the replicated key with a device-independent shape and the
rank -> slot map is the global slot order, the drawn slots (and the losses)
are the SAME on 1 and on n devices. A shard with no eligible slot owns no
draw; a query with no eligible slot at all gets K masked negatives (InfoNCE
loss exactly 0 for that row, see contrastive.py).
Cost per device: a [B, N/n] eligibility mask and int32 cumulative count
(5*B*N/n bytes of temporaries, e.g. 64 MB for B=32, N=400k on one device),
B*K*log2(N/n) searchsorted steps, and the rank draw (B*K^2 comparisons, or
B*N keys and a top-K for large K; see sampling.py), replicated.

Scoring. Each device scores the draws it owns. With few draws per slot
(K * SCORE_ALL_RATIO < N/n, e.g. the released K = 100) it gathers the drawn
rows ([B, K, P] float32, B*K*P*4 bytes of traffic). With many (K >= N/n /
SCORE_ALL_RATIO, e.g. K = 16k, N = 64k) it scores all its slots with one
[B, P] x [P, N/n] matmul (2*B*N/n*P flops, the same again for the query
gradient) and takes the drawn scores, which avoids the [B, K, P] copy: at
B = 8, K = 16k that copy is 64 MB per direction. Both give the same
float32 dot products up to summation order.

Loss combination (`bank_info_nce`). Queries and positives are replicated
(all-gathered from the batch sharding); every device scores only the
negatives it owns, and the log-sum-exp is combined with a pmax of the local
maxima (stop-gradient shift) and a psum of the shifted exp-sums. NCE sums
its per-negative terms locally and psums them. The bank is never gathered.

Bytes communicated per step and device (payload received per device with
ring collectives; n = devices on `axis`, s = bytes per element of the query
dtype, B global batch, P projection size, K negatives per query), for one
call of `bank_info_nce` (one direction, one bank):
  forward:  2*B*P*s*(n-1)/n      all-gather of queries and positives (they
                                 arrive batch-sharded; 0 if replicated)
          + 4*B*(n-1)            all-gather of the eligible counts [n, B] int32
          + 3 * 2*4*B*(n-1)/n    all-reduces of [B]: total count, pmax, psum
  backward: 2*4*B*P*(n-1)/n      all-reduce of the f32 query cotangent
  total  ~= (n-1)/n * (2*s + 8)*B*P + 4*B*(n-1) + 24*B*(n-1)/n
(verified against the compiled HLO: exactly these six collectives). K and N
do not appear: the naive designs move B*K*P*s (gathering the negatives) or
N*P*4 (gathering the bank) instead. `bank_crd_nce` is the same without the
pmax; `bank_crd_log_z` adds two scalar all-reduces. `sample_negatives` with a
mesh also all-reduces the [B, K] int32 ids: 2*4*B*K*(n-1)/n. `write` /
`write_fifo` all-gather the written rows, ids, labels and mask:
(B*P*s + 9*B)*(n-1)/n; `read` all-reduces [B, P] f32: 2*4*B*P*(n-1)/n.

The bank is state, not a parameter: the losses stop gradients into it.
"""

from __future__ import annotations

import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as PS

from codir_jax.losses import contrastive
from codir_jax.losses import representations
from codir_jax.losses import sampling

# Released code (CRD): momentum 0.5, K = 100 negatives.
DEFAULT_MOMENTUM = 0.5
DEFAULT_NUM_NEGATIVES = 100
# Score the whole local shard by matmul when K * ratio >= N/n (module doc).
SCORE_ALL_RATIO = 4


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
  return MemoryBank(vectors=vectors, labels=labels, valid=valid, ptr=jnp.zeros((), jnp.int32))


def shardings(mesh: jax.sharding.Mesh, *, axis: str = "data") -> MemoryBank:
  """NamedShardings of a bank: slot axis over `axis`, ptr replicated."""
  return MemoryBank(
      vectors=NamedSharding(mesh, PS(axis, None)),
      labels=NamedSharding(mesh, PS(axis)),
      valid=NamedSharding(mesh, PS(axis)),
      ptr=NamedSharding(mesh, PS()),
  )


# ----------------------------------------------------------------------------
# Shard-local helpers. `axis=None` = unsharded (one device, no collectives).


def _offset(n_local, axis):
  return 0 if axis is None else jax.lax.axis_index(axis) * n_local


def _psum(x, axis):
  return x if axis is None else jax.lax.psum(x, axis)


def _pmax(x, axis):
  return x if axis is None else jax.lax.pmax(x, axis)


def _run(fn, *, mesh, axis, bank_args, other_args, out_specs):
  """Calls fn(*bank_args, *other_args, axis=...) unsharded or via shard_map.

  bank_args are slot-sharded ([N, ...] over `axis`); other_args replicated.
  out_specs: pytree of "bank" / "rep" strings mirroring fn's output.
  """
  if mesh is None:
    return fn(*bank_args, *other_args, axis=None)
  if mesh.shape[axis] and bank_args[0].shape[0] % mesh.shape[axis]:
    raise ValueError(f"bank size {bank_args[0].shape[0]} not divisible by {mesh.shape[axis]}")
  to_spec = lambda s: PS(axis) if s == "bank" else PS()
  in_specs = tuple(PS(axis) for _ in bank_args) + tuple(
      jax.tree.map(lambda _: PS(), a) for a in other_args
  )
  return jax.shard_map(
      functools.partial(fn, axis=axis),
      mesh=mesh,
      in_specs=in_specs,
      out_specs=jax.tree.map(to_spec, out_specs),
  )(*bank_args, *other_args)


def _scatter_local(vec, lab, val, slots, new_vecs, new_labels, keep, momentum, *, axis):
  n_local = vec.shape[0]
  local = slots - _offset(n_local, axis)  # [B]
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
    fn2 = lambda v, l, a, s, x, k, *, axis: fn(v, l, a, s, x, None, k, axis=axis)
    others = (slots, vectors, keep)
  else:
    fn2 = fn
    others = (slots, vectors, labels, keep)
  vec, lab, val = _run(
      fn2, mesh=mesh, axis=axis, bank_args=(bank.vectors, bank.labels, bank.valid),
      other_args=others, out_specs=("bank", "bank", "bank"),
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
    raise ValueError(f"vectors {vectors.shape} vs ids {ids.shape}, bank {bank.vectors.shape}")
  keep = _keep(mask, ids.shape[0])
  vectors = jax.lax.stop_gradient(vectors)
  return _scatter(bank, jnp.asarray(ids, jnp.int32), vectors, labels, keep, momentum, mesh, axis)


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
    raise ValueError(f"vectors {vectors.shape} do not fit bank {bank.vectors.shape}")
  keep = _keep(mask, b)
  rank = jnp.cumsum(keep.astype(jnp.int32)) - 1  # [B]
  slots = (bank.ptr + rank) % n
  vectors = jax.lax.stop_gradient(vectors)
  new = _scatter(bank, slots, vectors, labels, keep, None, mesh, axis)
  return new.replace(ptr=((bank.ptr + jnp.sum(keep, dtype=jnp.int32)) % n).astype(jnp.int32))


def _read_local(vec, ids, *, axis):
  n_local = vec.shape[0]
  local = ids - _offset(n_local, axis)
  inside = (local >= 0) & (local < n_local)
  rows = jnp.where(inside[:, None], vec[jnp.clip(local, 0, n_local - 1)], 0.0)
  return _psum(rows, axis)


def read(bank: MemoryBank, *, ids: jax.Array, mesh=None, axis: str = "data") -> jax.Array:
  """M[ids] (the released code's positive: the other side's bank entry).

  Args:
    ids: [B] int slot ids (must be in range).

  Returns:
    [B, P] float32, stop-gradient-ed; communication 4*B*P*2(n-1)/n bytes.
  """
  vec = jax.lax.stop_gradient(bank.vectors)
  return _run(_read_local, mesh=mesh, axis=axis, bank_args=(vec,),
              other_args=(jnp.asarray(ids, jnp.int32),), out_specs="rep")


# ----------------------------------------------------------------------------
# Sampling.


def _sample_local(lab, val, rng, query_ids, query_labels, *, axis, num_negatives,
                  label_aware, label_gap):
  """Draws K global ranks; returns the locally owned draws.

  Returns: local_slot [B, K] int32, own [B, K] bool, total [B] int32 (|E_i|).
  """
  n_local = val.shape[0]
  b = query_ids.shape[0]
  slot_ids = _offset(n_local, axis) + jnp.arange(n_local)
  elig = val[None, :] & (slot_ids[None, :] != query_ids[:, None])  # [B, N_loc]
  if label_aware:
    elig = elig & contrastive.label_eligible(query_labels, lab, label_gap=label_gap)
  cum = jnp.cumsum(elig, axis=1, dtype=jnp.int32)  # [B, N_loc]
  e_local = cum[:, -1]  # [B]
  total = _psum(e_local, axis)  # [B]
  if axis is None:
    before = jnp.zeros_like(e_local)
  else:
    counts = jax.lax.all_gather(e_local, axis)  # [n, B]
    d = jax.lax.axis_index(axis)
    before = jnp.sum(jnp.where(jnp.arange(counts.shape[0])[:, None] < d, counts, 0), axis=0)
  n_total = n_local * (1 if axis is None else jax.lax.axis_size(axis))
  u = sampling.draw_ranks(rng, pool=total, num=num_negatives,
                          max_pool=n_total)  # [B, K] global ranks
  r = u - before[:, None]  # local rank, [B, K]
  own = (r >= 0) & (r < e_local[:, None]) & (total[:, None] > 0)
  # The (r+1)-th eligible local slot: first j with cum[j] > r.
  slot = jax.vmap(lambda c, x: jnp.searchsorted(c, x, side="right"))(cum, jnp.clip(r, 0, None))
  slot = jnp.clip(slot, 0, n_local - 1).astype(jnp.int32)
  return slot, own, total


def _check_queries(query_ids, query_labels, label_aware):
  if query_ids.ndim != 1:
    raise ValueError(f"query_ids must be [B], got {query_ids.shape}")
  if label_aware and (query_labels is None or query_labels.shape != query_ids.shape):
    raise ValueError("label_aware sampling needs query_labels [B]")
  if query_labels is None:
    query_labels = jnp.zeros(query_ids.shape, jnp.int32)
  return jnp.asarray(query_ids, jnp.int32), query_labels


def sample_negatives(
    bank: MemoryBank,
    *,
    rng: jax.Array,
    query_ids: jax.Array,
    query_labels: jax.Array | None = None,
    num_negatives: int = DEFAULT_NUM_NEGATIVES,
    label_aware: bool = True,
    label_gap: float | None = None,
    mesh=None,
    axis: str = "data",
) -> tuple[jax.Array, jax.Array]:
  """K slots per query, uniform over the eligible slots (see sampling.py).

  Eligible for query i: valid, != query_ids[i], and (label_aware) a
  different label (|diff| > label_gap for regression). See module docstring.
  Default label_aware=True: fine-tuning (paper and released code).
  Pre-training queues: label_aware=False, query_ids = -1.

  Args:
    bank: the bank.
    rng: PRNG key (replicated; the draw does not depend on the mesh).
    query_ids: [B] int slot of each query itself (-1: none).
    query_labels: [B] labels (needed when label_aware).
    num_negatives: K (100 in the released code).
    label_aware, label_gap: the label rule.
    mesh, axis: see `write`.

  Returns:
    (ids [B, K] int32 global slots, mask [B, K] bool). mask is False for
    every draw of a query without any eligible slot (its ids are then 0).
  """
  query_ids, query_labels = _check_queries(query_ids, query_labels, label_aware)

  def fn(lab, val, rng, qid, qlab, *, axis):
    slot, own, total = _sample_local(
        lab, val, rng, qid, qlab, axis=axis, num_negatives=num_negatives,
        label_aware=label_aware, label_gap=label_gap)
    ids = jnp.where(own, slot + _offset(val.shape[0], axis), 0)
    return _psum(ids, axis), jnp.broadcast_to(total[:, None] > 0, ids.shape)

  return _run(fn, mesh=mesh, axis=axis, bank_args=(bank.labels, bank.valid),
              other_args=(rng, query_ids, query_labels), out_specs=("rep", "rep"))


def _local_logits(vec, lab, val, queries, positives, rng, qid, qlab, *, axis, num_negatives,
                  temperature, label_aware, label_gap):
  slot, own, total = _sample_local(
      lab, val, rng, qid, qlab, axis=axis, num_negatives=num_negatives,
      label_aware=label_aware, label_gap=label_gap)
  q = representations.upcast(queries)
  vec = jax.lax.stop_gradient(vec)
  if num_negatives * SCORE_ALL_RATIO >= vec.shape[0]:
    # Many draws per slot: score every local slot with one matmul and pick
    # the drawn scores; no [B, K, P] copy of the negatives (see module doc).
    scores = jnp.einsum("bp,np->bn", q, vec)  # [B, N_loc]
    neg = jnp.where(own, jnp.take_along_axis(scores, slot, axis=1), 0.0)
  else:
    negs = jnp.where(own[..., None], vec[slot], 0.0)  # [B, K, P]
    neg = jnp.einsum("bp,bkp->bk", q, negs)
  neg = neg / temperature  # [B, K]
  pos = jnp.sum(q * representations.upcast(positives), axis=-1) / temperature  # [B]
  return pos, neg, own, total


def _check_pair(queries, positives, bank):
  if queries.shape != positives.shape or queries.shape[1] != bank.vectors.shape[1]:
    raise ValueError(f"queries {queries.shape}, positives {positives.shape}, bank {bank.vectors.shape}")


def bank_info_nce(
    *,
    queries: jax.Array,
    positives: jax.Array,
    bank: MemoryBank,
    rng: jax.Array,
    query_ids: jax.Array,
    query_labels: jax.Array | None = None,
    num_negatives: int = DEFAULT_NUM_NEGATIVES,
    temperature: float = contrastive.DEFAULT_TEMPERATURE,
    label_aware: bool = True,
    label_gap: float | None = None,
    mesh=None,
    axis: str = "data",
) -> jax.Array:
  """InfoNCE against K negatives sampled from a (sharded) bank (paper default).

  loss_i = logsumexp([l_i+, l_i1..l_iK]) - l_i+,  l_i+ = <q_i, p_i>/tau,
  l_ik = <q_i, M[n_ik]>/tau, n_ik ~ U(E_i) as in `sample_negatives`.
  Equals `contrastive.info_nce(queries, positives, bank.vectors[ids],
  negatives_mask=mask)` with `ids, mask = sample_negatives(...)` with the
  same rng, without ever gathering the bank.

  Args:
    queries: [B, P] anchors (e.g. z_s for the student direction against M_t).
    positives: [B, P] (z_t, paper; or `read(M_t, ids)`, released code).
    bank: the other side's bank (gradients are not propagated into it).
    rng: PRNG key; query_ids [B]; query_labels [B]; see `sample_negatives`.
    num_negatives: K; temperature: tau (0.07).
    mesh, axis: see `write`.

  Returns:
    [B] float32 (0 for a query without eligible slots), replicated.
  """
  _check_pair(queries, positives, bank)
  query_ids, query_labels = _check_queries(query_ids, query_labels, label_aware)

  def fn(vec, lab, val, queries, positives, rng, qid, qlab, *, axis):
    pos, neg, own, _ = _local_logits(
        vec, lab, val, queries, positives, rng, qid, qlab, axis=axis,
        num_negatives=num_negatives, temperature=temperature,
        label_aware=label_aware, label_gap=label_gap)
    neg = jnp.where(own, neg, -jnp.inf)
    m_local = jax.lax.stop_gradient(jnp.max(neg, axis=-1, initial=-jnp.inf))
    m = jnp.maximum(jax.lax.stop_gradient(pos), _pmax(m_local, axis))  # [B]
    s = _psum(jnp.sum(jnp.exp(neg - m[:, None]), axis=-1), axis)  # [B]
    return jnp.log(jnp.exp(pos - m) + s) + m - pos

  return _run(fn, mesh=mesh, axis=axis, bank_args=(bank.vectors, bank.labels, bank.valid),
              other_args=(queries, positives, rng, query_ids, query_labels), out_specs="rep")


def bank_crd_nce(
    *,
    queries: jax.Array,
    positives: jax.Array,
    bank: MemoryBank,
    rng: jax.Array,
    query_ids: jax.Array,
    log_z: jax.Array | float,
    num_data: int,
    query_labels: jax.Array | None = None,
    num_negatives: int = DEFAULT_NUM_NEGATIVES,
    temperature: float = contrastive.DEFAULT_TEMPERATURE,
    label_aware: bool = True,
    label_gap: float | None = None,
    eps: float = contrastive.CRD_EPS,
    mesh=None,
    axis: str = "data",
) -> jax.Array:
  """CRD NCE (released code, CRD Eq. 18) against bank negatives, shard-local.

  Same sampling as `bank_info_nce`; equation in
  `contrastive.crd_nce_from_logits` with K_i = K (0 for a query without
  eligible slots). `log_z` comes from `bank_crd_log_z` on the first batch
  (state of the train step, one per direction); `num_data` = N real examples.

  Returns:
    [B] float32, replicated.
  """
  _check_pair(queries, positives, bank)
  query_ids, query_labels = _check_queries(query_ids, query_labels, label_aware)

  def fn(vec, lab, val, queries, positives, rng, qid, qlab, *, axis):
    pos, neg, own, total = _local_logits(
        vec, lab, val, queries, positives, rng, qid, qlab, axis=axis,
        num_negatives=num_negatives, temperature=temperature,
        label_aware=label_aware, label_gap=label_gap)
    k_i = jnp.where(total > 0, float(num_negatives), 0.0)
    pos_term, neg_terms = contrastive.crd_nce_terms(
        positive_logits=pos, negative_logits=neg, negatives_mask=own,
        num_valid_negatives=k_i, log_z=log_z, num_data=num_data, eps=eps)
    return -(pos_term + _psum(jnp.sum(neg_terms, axis=-1), axis))

  return _run(fn, mesh=mesh, axis=axis, bank_args=(bank.vectors, bank.labels, bank.valid),
              other_args=(queries, positives, rng, query_ids, query_labels), out_specs="rep")


def bank_crd_log_z(
    *,
    queries: jax.Array,
    positives: jax.Array,
    bank: MemoryBank,
    rng: jax.Array,
    query_ids: jax.Array,
    num_data: int,
    query_labels: jax.Array | None = None,
    valid: jax.Array | None = None,
    num_negatives: int = DEFAULT_NUM_NEGATIVES,
    temperature: float = contrastive.DEFAULT_TEMPERATURE,
    label_aware: bool = True,
    label_gap: float | None = None,
    mesh=None,
    axis: str = "data",
) -> jax.Array:
  """log Z = log(mean over the batch's [B, 1+K] exp(l) * N) (CRD, first batch).

  Same sampling as `bank_crd_nce` (use the same rng on the first step so Z
  is computed from the scores that step uses, as in CRD).

  Args:
    valid: [B] bool rows to include (padding rows excluded) or None.

  Returns:
    scalar float32, stop-gradient-ed.
  """
  _check_pair(queries, positives, bank)
  query_ids, query_labels = _check_queries(query_ids, query_labels, label_aware)
  rows = _keep(valid, queries.shape[0])
  # Z is a constant (CRD freezes it): no tangents reach the pmax below, so
  # this also works inside jax.grad.
  queries = jax.lax.stop_gradient(queries)
  positives = jax.lax.stop_gradient(positives)

  def fn(vec, lab, val, queries, positives, rng, qid, qlab, rows, *, axis):
    pos, neg, own, _ = _local_logits(
        vec, lab, val, queries, positives, rng, qid, qlab, axis=axis,
        num_negatives=num_negatives, temperature=temperature,
        label_aware=label_aware, label_gap=label_gap)
    own = own & rows[:, None]
    neg = jnp.where(own, neg, -jnp.inf)
    pos = jnp.where(rows, pos, -jnp.inf)
    m = jnp.maximum(jnp.max(pos), _pmax(jnp.max(neg), axis))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    s = jnp.sum(jnp.exp(pos - m)) + _psum(jnp.sum(jnp.exp(neg - m)), axis)
    count = jnp.sum(rows, dtype=jnp.float32) + _psum(jnp.sum(own, dtype=jnp.float32), axis)
    return jnp.log(s) + m - jnp.log(jnp.maximum(count, 1.0)) + jnp.log(float(num_data))

  out = _run(fn, mesh=mesh, axis=axis, bank_args=(bank.vectors, bank.labels, bank.valid),
             other_args=(queries, positives, rng, query_ids, query_labels, rows), out_specs="rep")
  return jax.lax.stop_gradient(out)
