"""JAX/Flax: flax.linen.BatchNorm and flax.nnx.BatchNorm (bn.py), BatchNorm in raw jax.numpy ops (scratch.py)."""
