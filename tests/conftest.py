"""Test-wide setup: CPU only, float32 matmuls exact enough for 1e-5 parity.

Multi-device tests do not set the fake device count here (that would slow
every single-device test); they run a script in a subprocess through
`tests/multidevice.py`.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402  (must follow the environment above)

jax.config.update("jax_default_matmul_precision", "highest")
