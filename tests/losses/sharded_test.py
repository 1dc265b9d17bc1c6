"""The sharded bank on 8 fake CPU devices equals the 1-device results.

One subprocess (startup ~10 s) runs every check; the script asserts itself
and prints a JSON line with the measured max differences.
"""

import json

from tests import multidevice

SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from codir_jax.losses import bank_losses, memory_bank as mb

Auto = jax.sharding.AxisType.Auto
mesh8 = jax.make_mesh((8,), ("data",), axis_types=(Auto,))
mesh24 = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(Auto, Auto))
N_REAL, P, B, K = 90, 8, 6, 24
rng = np.random.default_rng(0)
unit = lambda *s: (lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True))(
    rng.normal(size=s)).astype(np.float32)
labels = np.arange(N_REAL) % 3
bank = mb.init(jax.random.PRNGKey(0), num_slots=N_REAL, dim=P, labels=labels,
               all_valid=True, pad_to_multiple=8)
N = bank.num_slots
valid = np.asarray(bank.valid).copy(); valid[[3, 17, 50]] = False
bank = bank.replace(valid=jnp.asarray(valid), vectors=jnp.asarray(unit(N, P)))
qid = np.array([0, 1, 2, 40, 41, 89], np.int32)
qlab = labels[qid]
q, p = unit(B, P), unit(B, P)
key = jax.random.key(11)  # typed key (new-style); PRNGKey also works
errs = {}

def err(name, a, b):
  e = float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
  errs[name] = max(errs.get(name, 0.0), e)
  assert e <= 1e-5, (name, e)

def run_all(b, mesh):
  kw = dict(rng=key, query_ids=qid, query_labels=qlab, num_negatives=K, mesh=mesh)
  ids, mask = mb.sample_negatives(b, **kw)
  kw = dict(kw, bank=b, temperature=0.1)
  info = lambda q, p: bank_losses.bank_info_nce(queries=q, positives=p, **kw)
  loss, grads = jax.value_and_grad(lambda q, p: info(q, p).sum(), argnums=(0, 1))(q, p)
  per = info(q, p)
  log_z = bank_losses.bank_crd_log_z(queries=q, positives=p, num_data=N_REAL,
                            valid=np.arange(B) < B - 1, **kw)
  nce = lambda q, p: bank_losses.bank_crd_nce(queries=q, positives=p, log_z=log_z,
                                     num_data=N_REAL, **kw)
  nce_g = jax.grad(lambda q, p: nce(q, p).sum(), argnums=(0, 1))(q, p)
  ids_u, _ = mb.sample_negatives(b, rng=key, query_ids=qid, num_negatives=K,
                                 label_aware=False, mesh=mesh)
  keep = np.array([1, 1, 0, 1, 1, 1], bool)
  w = mb.write(b, ids=qid, vectors=q, momentum=0.5, mask=keep, labels=qlab + 10, mesh=mesh)
  f = b
  for i in range(5):  # 25 kept rows in 5 steps (no wrap-around; `fw` wraps)
    f = mb.write_fifo(f, vectors=q * (i + 1), mask=keep, mesh=mesh)
  big = b.replace(ptr=jnp.asarray(N - 3, jnp.int32))
  fw = mb.write_fifo(big, vectors=q, mask=keep, mesh=mesh)  # wraps: 3 at end, 2 at start
  r = mb.read(b, ids=qid, mesh=mesh)
  return dict(ids=ids, mask=mask, ids_u=ids_u, per=per, gq=grads[0], gp=grads[1],
              log_z=log_z, nce=nce(q, p), nce_gq=nce_g[0], nce_gp=nce_g[1],
              w_vec=w.vectors, w_lab=w.labels, w_valid=w.valid, f_vec=f.vectors,
              f_ptr=f.ptr, fw_vec=fw.vectors, fw_ptr=fw.ptr, read=r), (w, fw)

one, _ = jax.jit(lambda b: run_all(b, None))(bank)
for name, mesh in [("8", mesh8), ("2x4", mesh24)]:
  sb = jax.device_put(bank, mb.shardings(mesh))
  fn = jax.jit(lambda b: run_all(b, mesh))
  many, (w, fw) = fn(sb)
  for k in ("ids", "mask", "ids_u", "w_lab", "w_valid", "f_ptr", "fw_ptr"):
    assert np.array_equal(np.asarray(one[k]), np.asarray(many[k])), (name, k)
  for k in ("per", "gq", "gp", "log_z", "nce", "nce_gq", "nce_gp", "w_vec", "f_vec",
            "fw_vec", "read"):
    err(k, one[k], many[k])
  # Bank outputs stay sharded along the slot axis.
  assert w.vectors.sharding.spec[0] == "data", w.vectors.sharding
  # The bank is never gathered: no collective carries an [N, P] array.
  hlo = fn.lower(sb).compile().as_text()
  for line in hlo.splitlines():
    if any(c in line for c in ("all-gather", "all-reduce", "all-to-all", "collective-permute")):
      assert f"[{N},{P}]" not in line.split("=")[1].split("(")[0], line
# Sanity of the numbers themselves.
ids = np.asarray(one["ids"])
assert not np.any(ids == qid[:, None]) and np.all(labels[np.minimum(ids, N_REAL - 1)] != qlab[:, None])
assert not np.any(np.isin(ids, [3, 17, 50]))
assert int(one["fw_ptr"]) == 2
print(json.dumps(errs))
"""


def test_sharded_bank_equals_single_device():
  out = multidevice.run_script(SCRIPT, n_devices=8)
  errs = json.loads(out.strip().splitlines()[-1])
  assert max(errs.values()) <= 1e-5, errs
  print("max |1-device - sharded|:", errs)
