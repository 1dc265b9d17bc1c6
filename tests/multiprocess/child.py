"""The CLI (`codir_jax.main`) with probes, for the multi-process tests.

  python -m codir_jax.launch ... --module tests.multiprocess.child -- ARGS
  python -m tests.multiprocess.child ARGS            (one process)

Environment (each optional):
  CODIR_TEST_DELAY   seconds to sleep before each train step, so that a
                     test can signal mid-run (timing only, never numbers).
  CODIR_TEST_PROBE   a directory; process p writes there
                     `bank_<p>.json`: bytes per device of every bank array
                     (from the live train state at the first step), and
                     `steps_<p>.npz`: the rows it fed at every train step;
                     `encoded_<p>.json` (CoDIR-Pre): every text segment
                     this process tokenised.

Speed only: JAX keys its compilation cache by, among others, a topology
fingerprint that differs between CPU processes and the device ids, so
process 1 would never load what process 0 cached, nor a 2-process run what
a 1-process run of the same program compiled
(distributed.shares_compile_cache). Here the key uses the device count and
platform instead and leaves the device assignment out (as JAX does for
GPUs), so every run loads one compile of each lowered program (a different
mesh or shape lowers to a different program), and process 0 compiles a new
multi-process program for all (jax_share_binary_between_hosts), so no
process waits 30 s in gloo's set-up for a slower compile.

Also speed only: torch is hidden. The CLI's runtime dependencies
(pyproject.toml) do not include it, but transformers imports it whenever
it is installed (~3.5 s of every process start); the dev environment has
it for the PyTorch reference tests. So these runs see what a runtime
install sees.
"""

import json
import os
import sys
import time

from absl import app
import jax
import numpy as np

from codir_jax import distributed
from codir_jax import main as cli
from codir_jax.data import text_stream
from codir_jax.train import loop

_DELAY = float(os.environ.get("CODIR_TEST_DELAY", "0") or 0)
_PROBE = os.environ.get("CODIR_TEST_PROBE", "")


def _share_compile_cache() -> None:
  from jax._src import cache_key  # pylint: disable=g-import-not-at-top

  if not all(
      hasattr(cache_key, f)
      for f in ("_hash_accelerator_config", "_hash_serialized_compile_options")
  ):
    return  # Another JAX: every process compiles (slower, same numbers).

  def accelerator_config(hash_obj, devices):
    hash_obj.update(f"{devices.size}:{devices.flat[0].platform}".encode())

  options = cache_key._hash_serialized_compile_options

  def compile_options(hash_obj, opts, strip_device_assignment=False):
    del strip_device_assignment
    return options(hash_obj, opts, strip_device_assignment=True)

  cache_key._hash_accelerator_config = accelerator_config
  cache_key._hash_serialized_compile_options = compile_options
  distributed.shares_compile_cache = lambda: True
  jax.config.update("jax_share_binary_between_hosts", True)


def _local_rows(x: jax.Array) -> np.ndarray:
  """The rows of a batch-sharded array this process holds, in order."""
  shards = {}
  for s in x.addressable_shards:
    shards[s.index[0].start or 0] = np.asarray(s.data)
  return np.concatenate([shards[k] for k in sorted(shards)])


def _bank_bytes(state) -> dict:
  out = {}
  for side, bank in (state.bank or {}).items():
    for name in ("vectors", "labels", "valid"):
      x = getattr(bank, name)
      out[f"{side}.{name}"] = {
          "shape": list(x.shape),
          "nbytes": int(x.nbytes),
          "per_device": sorted(
              {int(s.data.nbytes) for s in x.addressable_shards}
          ),
      }
  return out


def _probe_steps() -> None:
  compile_run = loop.compile_run
  pid = jax.process_index

  def probed(run):
    compiled = compile_run(run)
    step_fn, fed = compiled.train_step, []

    def step(state, batch, teacher):
      if _DELAY:
        time.sleep(_DELAY)
      if _PROBE:
        if not fed:
          with open(os.path.join(_PROBE, f"bank_{pid()}.json"), "w") as f:
            json.dump(_bank_bytes(state), f)
        fed.append({k: _local_rows(v) for k, v in batch.items()})
        np.savez(
            os.path.join(_PROBE, f"steps_{pid()}.npz"),
            **{f"{i}/{k}": v for i, b in enumerate(fed) for k, v in b.items()},
        )
      return step_fn(state, batch, teacher)

    compiled.train_step = step
    return compiled

  loop.compile_run = probed


def _probe_tokenising() -> None:
  init = text_stream.SegmentEncoder.__init__

  def probed_init(self, *args, **kwargs):
    init(self, *args, **kwargs)
    encode = self._encode  # pylint: disable=protected-access

    def recording(texts, **kw):
      path = os.path.join(_PROBE, f"encoded_{jax.process_index()}.json")
      seen = json.load(open(path)) if os.path.exists(path) else []
      with open(path, "w") as f:
        json.dump(seen + list(texts), f)
      return encode(texts, **kw)

    self._encode = recording  # pylint: disable=protected-access

  text_stream.SegmentEncoder.__init__ = probed_init


if __name__ == "__main__":
  sys.modules.setdefault("torch", None)  # `import torch` raises ImportError.
  _share_compile_cache()
  _probe_steps()
  if _PROBE:
    _probe_tokenising()
  sys.exit(app.run(cli.main))
