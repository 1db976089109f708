"""ResNet for 32x32 inputs (He et al., "Deep Residual Learning for Image Recognition", 2016), as in
kuangliu/pytorch-cifar: a 3x3 stem instead of the ImageNet 7x7 conv + max-pool, so layer4 sees a 4x4 map; the
stages keep the names layer1..layer4, and `model.layer4[-1]` is the natural GradCAM target."""
from __future__ import annotations

import contextlib
import copy
import io

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; a 1x1 conv + BN shortcut where the shape changes."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv, four stages of blocks (64/128/256/512 channels), global average pool, linear."""

    def __init__(self, num_blocks: list[int], num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        stages = []
        for planes, blocks, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(BasicBlock(in_planes, planes, s))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) normalized images -> (N,num_classes) logits."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def ResNet18(num_classes: int = 10) -> ResNet:
    return ResNet([2, 2, 2, 2], num_classes)


def ResNet34(num_classes: int = 10) -> ResNet:
    return ResNet([3, 4, 6, 3], num_classes)


def layer_table(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> str:
    """torchsummary's layer table as text, from a copy on the model's device (its statistics and mode untouched)."""
    from torchsummary import summary as torchsummary_summary

    param = next(model.parameters())
    device = "cuda" if param.device.type == "cuda" else "cpu"
    probe = copy.deepcopy(model).float().to(device)
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        torchsummary_summary(probe, input_size, device=device)
    return text.getvalue()
