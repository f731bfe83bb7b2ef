"""PyTorch. The same public files as every framework folder (tests/test_symmetry.py checks it):

- descriptor.py: the framework as data (name, order, layout), read without importing torch;
- convention.py: torch.nn.BatchNorm's defaults, each with where torch's source defines it;
- convert.py: NumPy <-> torch dtypes, devices and tensors;
- batchnorm.py: torch.nn.BatchNorm1d/2d/3d (BuiltinBatchNorm) and BatchNorm in raw torch ops (ScratchBatchNorm);
- alexnet.py: AlexNet as a torch.nn.Module, canonical arrays in (from_canonical) and out (to_canonical);
- train.py: the Trainer (torch.optim.SGD).
"""
