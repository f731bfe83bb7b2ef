"""Model-level parity: the same AlexNet, weights and batches in every framework, against the reference and PyTorch."""
