"""Experiment scripts (run as files; never imported by codir_jax)."""
