"""MXNet: mxnet.gluon.nn.BatchNorm (bn.py), BatchNorm in raw mx.nd ops (scratch.py), AlexNet, training."""
