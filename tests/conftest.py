"""Test-wide setup: CPU only, float32 matmuls exact enough for 1e-5 parity.

Multi-device tests do not set the fake device count here (that would slow
every single-device test); they run a script in a subprocess through
`tests/multidevice.py`.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Runs turn JAX's persistent compilation cache on (config.compile_cache; ''
# = the directory JAX already uses): the suite, and every process it
# starts, keeps it in a temporary directory, never the user's cache.
_JAX_CACHE = tempfile.mkdtemp(prefix="codir_tests_jax_cache_")
atexit.register(shutil.rmtree, _JAX_CACHE, ignore_errors=True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE

import jax  # noqa: E402  (must follow the environment above)

jax.config.update("jax_default_matmul_precision", "highest")
jax.config.update("jax_compilation_cache_dir", _JAX_CACHE)  # If imported.
