"""Test setup: 8 simulated CPU devices, before any JAX computation."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top

jax.config.update("jax_num_cpu_devices", 8)
# Implicit rank promotion hides broadcasting bugs; every op must be explicit.
jax.config.update("jax_numpy_rank_promotion", "raise")
