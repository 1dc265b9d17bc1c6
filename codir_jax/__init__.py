"""codir_jax: Contrastive Distillation on Intermediate Representations in JAX.

Sun et al., "Contrastive Distillation on Intermediate Representations for
Language Model Compression", EMNLP 2020.
"""

__version__ = "0.1.0"
