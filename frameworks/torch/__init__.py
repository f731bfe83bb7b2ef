"""PyTorch. The same public files as every framework folder (tests/test_symmetry.py checks it):

- descriptor.py: the framework as data (name, order, layout), read without importing torch;
- convention.py: torch.nn.BatchNorm's defaults; LAYER_CONVENTIONS: the other four layers', each with where the source
  defines it;
- convert.py: NumPy <-> torch dtypes, devices and tensors;
- batchnorm.py: torch.nn.BatchNorm1d/2d/3d (BuiltinBatchNorm) and BatchNorm in raw torch ops (ScratchBatchNorm);
- layernorm.py, groupnorm.py, instancenorm.py, rmsnorm.py: torch.nn.LayerNorm / GroupNorm / InstanceNorm1d-3d /
  RMSNorm (Builtin<Norm>) and each in raw torch ops (Scratch<Norm>);
- alexnet.py: AlexNet as a torch.nn.Module, canonical arrays in (from_canonical) and out (to_canonical);
- train.py: the Trainer (torch.optim.SGD);
- replicas.py: cross-replica BatchNorm over torch.distributed (gloo), one process per replica: torch.nn.SyncBatchNorm
  (BuiltinSyncBatchNorm; refused on CPU tensors, recorded as a skip) and an all-gather/all-reduce BatchNorm in torch
  ops (ScratchSyncBatchNorm), with plain BatchNorm per replica for the per-replica cases;
- data_parallel.py: the DataParallelTrainer (DistributedDataParallel over gloo, R worker processes).
"""
