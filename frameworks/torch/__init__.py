"""PyTorch: torch.nn.BatchNorm1d/2d/3d (bn.py), BatchNorm in raw torch ops (scratch.py), AlexNet, training."""
