"""The seed tutorial's BatchNorm pitfalls, measured as the eval accuracy of a trained AlexNet."""
