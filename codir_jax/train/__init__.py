"""codir_jax.train."""
