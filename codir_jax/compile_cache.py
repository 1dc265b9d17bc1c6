"""JAX's persistent compilation cache: where it lives and what it did.

With the cache on (`config.compile_cache.enabled`, the default), every
program JAX compiles is written to a directory on disk, keyed by the
program, the jaxlib version, the XLA flags, the devices it runs on and its
compile options; a later process that builds the same program loads it
instead of compiling it. On a 2-core CPU compiling the train step takes
tens of seconds, so a rerun of the same model and shapes starts training
almost at once. `sharding.configure_jax` turns the cache on or off; this
module names the directory and counts, per jitted function, the programs
loaded from the cache and the programs compiled (`track`).

The cache is trusted code: keep it in a directory only you can write to
(JAX's persistent-cache guide). XLA:CPU checks that a loaded program was
compiled for a CPU with this host's features and recompiles otherwise.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import threading
from typing import Iterator

import jax

# jax/_src/compiler.py and dispatch.py (jax 0.10.2): `_HIT` is recorded
# inside a compile request that the cache answered, `_COMPILE` (with the
# function's name) when the request returns, hit or compiled.
_HIT = "/jax/compilation_cache/cache_hits"
_SAVED = "/jax/compilation_cache/compile_time_saved_sec"
_COMPILE = "/jax/core/compile/backend_compile_duration"


@dataclasses.dataclass(frozen=True)
class Options:
  """`config.compile_cache` (configs/base.py)."""

  enabled: bool = True
  dir: str = ""  # '' = JAX's current directory, else `default_dir()`.


def default_dir() -> str:
  """$XDG_CACHE_HOME/codir_jax/jax_cache (XDG default: ~/.cache)."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache"
  )
  return os.path.join(root, "codir_jax", "jax_cache")


def resolve_dir(configured: str, current: str | None) -> str:
  """The cache directory of a run.

  Args:
    configured: `config.compile_cache.dir` ('' = not set).
    current: the directory JAX already uses (`JAX_COMPILATION_CACHE_DIR`
      or a caller's `jax.config.update`), or None.

  Returns:
    `configured` if set, else `current` if set, else `default_dir()`,
    with `~` expanded.
  """
  return os.path.expanduser(configured or current or default_dir())


class CompileLog:
  """Per jitted function: programs loaded from the cache and compiled."""

  def __init__(self):
    self.loaded = collections.Counter()  # 'jit(train_step)' -> count.
    self.compiled = collections.Counter()
    self.compile_s = 0.0  # Seconds spent compiling.
    self.saved_s = 0.0  # Compile seconds the loaded programs took once.
    self._lock = threading.Lock()
    self._hit = threading.local()

  def on_event(self, event: str, **unused_kwargs) -> None:
    if event == _HIT:
      self._hit.value = True

  def on_duration(self, event: str, seconds: float, **kwargs) -> None:
    with self._lock:
      if event == _SAVED:
        self.saved_s += max(float(seconds), 0.0)
      if event != _COMPILE:
        return
      name = str(kwargs.get("fun_name", "?"))
      if getattr(self._hit, "value", False):
        self.loaded[name] += 1
      else:
        self.compiled[name] += 1
        self.compile_s += float(seconds)
    self._hit.value = False

  def summary(self, *focus: str) -> dict[str, float | int]:
    """Totals, plus hits and compiles of each function named in `focus`.

    E.g. `summary("train_step")` adds `train_step_cache_hits` and
    `train_step_compiled` (the counts of 'jit(train_step)').
    """
    out = {
        "cache_hits": sum(self.loaded.values()),
        "compiled": sum(self.compiled.values()),
        "compile_s": round(self.compile_s, 1),
        "saved_s": round(self.saved_s, 1),
    }
    for name in focus:
      out[f"{name}_cache_hits"] = self.loaded[f"jit({name})"]
      out[f"{name}_compiled"] = self.compiled[f"jit({name})"]
    return out


@contextlib.contextmanager
def track() -> Iterator[CompileLog]:
  """Counts the compile requests made inside the `with` block."""
  log = CompileLog()
  jax.monitoring.register_event_listener(log.on_event)
  jax.monitoring.register_event_duration_secs_listener(log.on_duration)
  try:
    yield log
  finally:
    jax.monitoring.unregister_event_listener(log.on_event)
    jax.monitoring.unregister_event_duration_listener(log.on_duration)
