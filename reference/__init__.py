"""NumPy float64 reference BatchNorm: the ground truth every framework is compared with."""
