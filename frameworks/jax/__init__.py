"""JAX/Flax. The same public files as every framework folder (tests/test_symmetry.py checks it):

- descriptor.py: the framework as data (name, order, layout), read without importing jax;
- convention.py: flax's BatchNorm defaults; LAYER_CONVENTIONS: the other four layers', each with where the source
  defines it;
- convert.py: NumPy <-> JAX dtypes, devices and arrays;
- batchnorm.py: flax.linen.BatchNorm and flax.nnx.BatchNorm (BuiltinBatchNorm) and BatchNorm in raw jax.numpy ops
  (ScratchBatchNorm);
- layernorm.py, groupnorm.py, instancenorm.py, rmsnorm.py: flax.linen.LayerNorm / GroupNorm / InstanceNorm / RMSNorm
  (Builtin<Norm>) and each in raw jax.numpy ops (Scratch<Norm>);
- alexnet.py: AlexNet as a flax.linen Module, canonical arrays in (from_canonical, the Flax variables) and out
  (to_canonical);
- train.py: the Trainer (optax SGD, jax.jit);
- replicas.py: cross-replica BatchNorm on host devices under shard_map and pmap: flax.linen.BatchNorm(axis_name=...)
  (BuiltinSyncBatchNorm) and a count-weighted psum BatchNorm in jax.numpy (ScratchSyncBatchNorm);
- data_parallel.py: the DataParallelTrainer (jax.shard_map over R host devices, gradients pmean-ed).

Private to this folder: _x64.py, the scoped x64 switch float64 needs; _session.py, the jitted steps and layer
session of batchnorm.py's adapters (JAX runs a layer as a pure function).
"""
