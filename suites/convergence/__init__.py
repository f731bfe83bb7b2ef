"""The convergence suite: AlexNet on Fashion-MNIST with and without BN, trained alike in every framework."""
