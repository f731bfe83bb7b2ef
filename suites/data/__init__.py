"""Fashion-MNIST: IDX files, locating and verifying them, and the shared numpy input pipeline."""
