"""Keras 3, on its TensorFlow, JAX and PyTorch backends. The same public files as every framework folder
(tests/test_symmetry.py checks it):

- descriptor.py: the three frameworks as data (keras-tensorflow, keras-jax, keras-torch: one per backend, each run
  in a process of its own because Keras fixes its backend at import), read without importing keras;
- convention.py: keras.layers.BatchNormalization's defaults, per backend; LAYER_CONVENTIONS: the other layers', each
  with where the source defines it;
- convert.py: NumPy <-> Keras dtypes, devices and tensors;
- batchnorm.py: keras.layers.BatchNormalization (BuiltinBatchNorm) and BatchNorm in keras.ops (ScratchBatchNorm);
- layernorm.py, groupnorm.py, instancenorm.py, rmsnorm.py: keras.layers.LayerNormalization / GroupNormalization /
  GroupNormalization(groups=-1) (Keras' instance norm) / RMSNormalization (Builtin<Norm>) and each in keras.ops
  (Scratch<Norm>);
- alexnet.py: AlexNet as a keras.Model, canonical arrays in (from_canonical) and out (to_canonical);
- train.py: the Trainer (keras.optimizers.SGD);
- replicas.py, data_parallel.py: BatchNorm across data-parallel replicas;
- user_layers.py, fold.py, checkpoint.py, audit.py: the porter's toolkit (a user's own layers, folding, checkpoints,
  the frozen-BatchNorm audit).

Private to this folder: _backend.py, which backend this process runs (and so which framework it is); _x64.py, the
scoped x64 switch float64 needs on the JAX backend; _session.py, the one training step per backend (a gradient is
the one thing Keras leaves to its backend) and the layer session every adapter of the folder uses.
"""
