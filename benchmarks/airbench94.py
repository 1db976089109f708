"""airbench94 on any device, written for this project from its description: Keller Jordan, "94% on CIFAR-10 in
3.29 Seconds on a Single GPU" (2024), and its repository KellerJordan/cifar10-airbench (published: 94.01% mean
test accuracy with TTA on the original CIFAR-10). The `airbench` package runs on CUDA in fp16 only; this file
is the same recipe in plain PyTorch, fp32 by default, so that a CPU can calibrate our data against it
(benchmarks/calibration.py).

The recipe: a 2x2 convolution 3->24 initialised to whiten the training images' patches (frozen; its bias
trains for 3 epochs), three blocks conv-pool-BN-GELU-conv-BN-GELU of 64/256/256 channels, max-pool, a linear
head scaled by 1/9; batch 1024 for 9.9 epochs, Nesterov SGD with decoupled LR and weight decay, BatchNorm
biases at 64x the LR, label smoothing 0.2, a lookahead of the weights every 5 steps from epoch 3, alternating
flip and 2-px translation; test-time augmentation level 2 (flip and 1-px translations).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

hyp = {
    "epochs": 9.9,
    "batch_size": 1024,
    "lr": 11.5,               # per 1024 images, decoupled from momentum
    "momentum": 0.85,
    "weight_decay": 0.0153,   # per 1024 images, decoupled from the LR
    "bias_scaler": 64.0,      # BatchNorm biases learn this much faster (their weight decay stays)
    "label_smoothing": 0.2,
    "whiten_bias_epochs": 3,  # the whitening layer's bias trains this long, then stays
    "translate": 2,           # pixels, reflect-padded
    "batchnorm_momentum": 0.6,
    "widths": (64, 256, 256),
    "head_scale": 1 / 9,
    "whiten_images": 5000,    # training images whose 2x2 patches set the whitening layer
    "whiten_eps": 5e-4,
    "lookahead_from_epoch": 3,
    "lookahead_every": 5,
    "tta_level": 2,
}
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with a fixed scale of 1 (only the bias learns), eps 1e-12, running averages at momentum 0.6."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-12, momentum=1 - hyp["batchnorm_momentum"])
        self.weight.requires_grad = False


class Conv(nn.Conv2d):
    """3x3 'same' convolution without bias, initialised with an identity part (Dirac) on its first channels."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__(channels_in, channels_out, 3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.dirac_(self.weight.data[:self.in_channels])


class ConvGroup(nn.Module):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.conv1, self.pool, self.norm1 = Conv(channels_in, channels_out), nn.MaxPool2d(2), BatchNorm(channels_out)
        self.conv2, self.norm2, self.activ = Conv(channels_out, channels_out), BatchNorm(channels_out), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class Scale(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def make_net(widths: tuple[int, int, int] = hyp["widths"]) -> nn.Sequential:
    """(N,3,32,32) normalized -> (N,10) logits. net[0] is the whitening layer (weights frozen)."""
    whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)  # 2 x (3 channels x 2 x 2): each direction and its negative
    whiten.weight.requires_grad = False
    nn.init.zeros_(whiten.bias)
    return nn.Sequential(whiten, nn.GELU(), ConvGroup(24, widths[0]), ConvGroup(widths[0], widths[1]),
                         ConvGroup(widths[1], widths[2]), nn.MaxPool2d(3), nn.Flatten(),
                         nn.Linear(widths[2], 10, bias=False), Scale(hyp["head_scale"]))


def patches(images: torch.Tensor, size: int = 2) -> torch.Tensor:
    """(N,C,H,W) -> every size x size patch, (N*(H-size+1)*(W-size+1), C*size*size)."""
    c = images.shape[1]
    return images.unfold(2, size, 1).unfold(3, size, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * size * size)


@torch.no_grad()
def init_whitening(conv: nn.Conv2d, images: torch.Tensor, eps: float = hyp["whiten_eps"]) -> None:
    """Set `conv` (3->24, 2x2) to the eigenvectors of the patches' second-moment matrix, each scaled by
    1/sqrt(eigenvalue + eps), and their negatives: on those patches its first 12 outputs are uncorrelated."""
    x = patches(images.float(), conv.kernel_size[0]).double()
    eigenvalues, eigenvectors = torch.linalg.eigh(x.T @ x / len(x))
    order = eigenvalues.argsort(descending=True)
    filters = (eigenvectors[:, order] / (eigenvalues[order] + eps).sqrt()).T  # one filter per row
    filters = filters.reshape(-1, *conv.weight.shape[1:]).to(conv.weight.dtype)
    conv.weight.copy_(torch.cat([filters, -filters]))


class Lookahead:
    """An average of the network's floating-point state kept beside it and copied back into it at each update."""

    def __init__(self, net: nn.Module):
        self.average = {k: v.detach().clone() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: nn.Module, decay: float) -> None:
        for key, value in net.state_dict().items():
            if value.is_floating_point():
                self.average[key].lerp_(value, 1 - decay)
                value.copy_(self.average[key])


def normalize(images: torch.Tensor) -> torch.Tensor:
    """(N,32,32,3) uint8 -> (N,3,32,32) float normalized with CIFAR-10's statistics."""
    x = images.permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)


def batch_translate(padded: torch.Tensor, generator: torch.Generator, size: int = 32) -> torch.Tensor:
    """A random size x size window of each padded image (N,C,size+2r,size+2r)."""
    r = (padded.shape[-1] - size) // 2
    shifts = torch.randint(0, 2 * r + 1, (len(padded), 2), generator=generator)
    out = torch.empty(len(padded), padded.shape[1], size, size, dtype=padded.dtype)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            chosen = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            out[chosen] = padded[chosen, :, dy:dy + size, dx:dx + size]
    return out


def epoch_images(padded: torch.Tensor, epoch: int, generator: torch.Generator) -> torch.Tensor:
    """The training images of `epoch`: translated at random, and all mirrored in odd epochs ("alternating flip":
    `padded` was flipped at random once, so every image is seen both ways every two epochs)."""
    images = batch_translate(padded, generator)
    return images.flip(-1) if epoch % 2 else images


@torch.no_grad()
def tta_logits(net: nn.Module, images: torch.Tensor, level: int = hyp["tta_level"],
               batch_size: int = 2000) -> torch.Tensor:
    """(N,10) logits: level 0 the images, 1 the mean with their mirror, 2 half that and half the mean of the same
    for the images moved one pixel up-left and one pixel down-right (reflected at the border)."""
    def mirrored(x):
        return net(x) if level == 0 else 0.5 * (net(x) + net(x.flip(-1)))

    out = []
    for x in images.split(batch_size):
        logits = mirrored(x)
        if level == 2:
            padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
            moved = 0.5 * (mirrored(padded[..., :32, :32]) + mirrored(padded[..., 2:, 2:]))
            logits = 0.5 * (logits + moved)
        out.append(logits)
    return torch.cat(out)


def triangle(step: int, steps: int, start: float = 0.2, peak_at: float = 0.23, end: float = 0.07) -> float:
    """The LR's multiplier: linear from `start` to 1 at `peak_at` of the steps, then linear to `end`."""
    peak = int(peak_at * steps)
    if step < peak:
        return start + (1 - start) * step / peak
    return 1 + (end - 1) * (step - peak) / (steps - peak)


@dataclass
class Result:
    accuracy: float       # % on the test images, plain
    tta_accuracy: float   # % with test-time augmentation (what is published)
    train_seconds: float


def train(train_images: torch.Tensor, train_labels: torch.Tensor, seed: int, epochs: float = hyp["epochs"],
          precision: str = "fp32", log=print) -> nn.Sequential:
    """Train airbench94 on (N,32,32,3) uint8 images and (N,) labels on the CPU; returns the network (eval mode)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = make_net().to(memory_format=torch.channels_last)
    images, labels = normalize(train_images), train_labels.long()
    init_whitening(net[0], images[:hyp["whiten_images"]])
    flipped = torch.where(torch.rand(len(images), 1, 1, 1, generator=gen) < 0.5, images.flip(-1), images)
    padded = F.pad(flipped, (hyp["translate"],) * 4, mode="reflect")

    batch, momentum = hyp["batch_size"], hyp["momentum"]
    kilostep = 1024 * (1 + 1 / (1 - momentum))  # how much larger than a gradient a Nesterov step is, per 1024
    lr, wd = hyp["lr"] / kilostep, hyp["weight_decay"] * batch / kilostep
    norm_biases = [p for name, p in net.named_parameters() if "norm" in name and p.requires_grad]
    others = [p for name, p in net.named_parameters() if "norm" not in name and p.requires_grad]
    optimizer = torch.optim.SGD([{"params": norm_biases, "lr": lr * hyp["bias_scaler"],
                                  "weight_decay": wd / (lr * hyp["bias_scaler"])},
                                 {"params": others, "lr": lr, "weight_decay": wd / lr}],
                                momentum=momentum, nesterov=True)
    steps_per_epoch = len(images) // batch
    total = math.ceil(steps_per_epoch * epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: triangle(min(i, total), total))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=hyp["label_smoothing"], reduction="sum")
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16")
    lookahead, step = None, 0
    for epoch in range(math.ceil(epochs)):
        net[0].bias.requires_grad = epoch < hyp["whiten_bias_epochs"]
        net.train()
        epoch_x = epoch_images(padded, epoch, gen)
        order = torch.randperm(len(images), generator=gen)
        for i in range(steps_per_epoch):
            chosen = order[i * batch:(i + 1) * batch]
            with autocast:
                loss = loss_fn(net(epoch_x[chosen].contiguous(memory_format=torch.channels_last)).float(),
                               labels[chosen])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if epoch >= hyp["lookahead_from_epoch"] and step % hyp["lookahead_every"] == 0:
                if lookahead is None:
                    lookahead = Lookahead(net)
                else:  # the average's decay grows over training: fast at first, averaging strongly at the end
                    lookahead.update(net, decay=0.95 ** hyp["lookahead_every"] * (step / total) ** 3)
            if step >= total:
                break
        if lookahead is not None:
            lookahead.update(net, decay=1.0)  # the network leaves each epoch holding the average
        log(f"epoch {epoch + 1}: last batch loss {loss.item() / len(chosen):.4f}")
    return net.eval()


def evaluate(net: nn.Module, test_images: torch.Tensor, test_labels: torch.Tensor,
             precision: str = "fp32") -> tuple[float, float]:
    """(plain, TTA level 2) accuracy in % on (N,32,32,3) uint8 images."""
    x = normalize(test_images).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        plain, tta = tta_logits(net, x, 0).argmax(1), tta_logits(net, x, 2).argmax(1)
    labels = test_labels.long()
    return 100 * (plain == labels).float().mean().item(), 100 * (tta == labels).float().mean().item()


def run(train_images, train_labels, test_images, test_labels, seed: int, precision: str = "fp32",
        log=print) -> tuple[nn.Sequential, Result]:
    """Train one seed and test it: the network and its Result."""
    start = time.perf_counter()
    net = train(torch.as_tensor(train_images), torch.as_tensor(train_labels), seed, precision=precision, log=log)
    seconds = time.perf_counter() - start
    plain, tta = evaluate(net, torch.as_tensor(test_images), torch.as_tensor(test_labels), precision)
    return net, Result(plain, tta, seconds)
