"""MXNet Gluon. The same public files as every framework folder (tests/test_symmetry.py checks it):

- descriptor.py: the framework as data (name, order, layout), read without importing mxnet;
- convention.py: gluon.nn.BatchNorm's defaults; LAYER_CONVENTIONS: LayerNorm's, GroupNorm's, InstanceNorm's, each with
  where the source defines it;
- convert.py: NumPy <-> MXNet dtypes, contexts and NDArrays;
- batchnorm.py: mxnet.gluon.nn.BatchNorm (BuiltinBatchNorm) and BatchNorm in raw mx.nd ops (ScratchBatchNorm);
- layernorm.py, groupnorm.py, instancenorm.py, rmsnorm.py: gluon.nn.LayerNorm / GroupNorm / InstanceNorm
  (Builtin<Norm>; MXNet 1.9 has no RMSNorm) and each in raw mx.nd ops (Scratch<Norm>, RMSNorm included);
- alexnet.py: AlexNet as a gluon HybridSequential, canonical arrays in (from_canonical) and out (to_canonical);
- train.py: the Trainer (gluon.Trainer('sgd'));
- replicas.py: cross-replica BatchNorm across CPU contexts: gluon.contrib.nn.SyncBatchNorm (BuiltinSyncBatchNorm) and
  a Chan all-reduce in mx.nd ops (ScratchSyncBatchNorm), with plain BatchNorm per context for per-replica cases;
- data_parallel.py: the DataParallelTrainer (R contexts, gluon.Trainer with the kvstore).

Private to this folder: _mx.py, the one place MXNet is imported (after the NumPy shim MXNet 1.9.1 needs).
"""
