"""PyTorch_Vision: train ResNet18 on CIFAR-10 and explain it with GradCAM (see README)."""
