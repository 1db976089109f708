import numpy as np
import pytest
import torch

from PyTorch_Vision.gradcam import GradCAM, overlay, scale_per_map
from PyTorch_Vision.models import ResNet18


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = ResNet18()
    # a few train-mode passes so BatchNorm statistics are not the identity
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(16, 3, 32, 32))
    return m.eval()


def class_activation_map(model, images, classes):
    """CAM (Zhou et al., 2016): ReLU(sum_k w[c,k] A_k) at the layer feeding global average pool + linear."""
    acts = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: acts.update(a=o.detach()))
    with torch.no_grad():
        model(images)
    handle.remove()
    w = model.linear.weight[classes]  # (N,K)
    cam = torch.relu((w[:, :, None, None] * acts["a"]).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    return scale_per_map(cam)


def test_gradcam_at_layer4_equals_cam(model):
    images = torch.randn(6, 3, 32, 32)
    classes = torch.tensor([0, 3, 9, 1, 1, 5])
    maps = GradCAM(model, model.layer4[-1])(images, classes)
    assert maps.shape == (6, 32, 32)
    torch.testing.assert_close(maps, class_activation_map(model, images, classes), atol=1e-5, rtol=1e-4)
    flat = maps.flatten(1)
    live = flat.max(1).values > 0  # an untrained model can have no positive evidence for a class
    assert live.sum() >= 2
    assert torch.allclose(flat[live].max(1).values, torch.ones(int(live.sum()))) and (flat.min(1).values == 0).all()


def test_batched_equals_one_at_a_time(model):
    images, classes = torch.randn(4, 3, 32, 32), torch.tensor([2, 4, 6, 8])
    cam = GradCAM(model, model.layer3[-1])
    together = cam(images, classes)
    alone = torch.cat([cam(images[i:i + 1], classes[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_hooks_released_mode_restored_no_grads_left(model):
    images, classes = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    layer = model.layer4[-1]
    cam = GradCAM(model, layer)
    in_eval = cam(images, classes)
    model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    in_train = cam(images, classes)
    assert model.training, "GradCAM must restore train mode"
    assert all(torch.equal(stats[k], model.state_dict()[k]) for k in stats), "BatchNorm statistics must not change"
    torch.testing.assert_close(in_train, in_eval)  # computed in eval mode whatever the model's mode
    assert not layer._forward_hooks
    assert all(p.grad is None for p in model.parameters()), "no gradients may accumulate in the model"
    with pytest.raises(ValueError):
        cam(torch.randn(2, 3, 32, 32), torch.tensor([1]))
    assert not layer._forward_hooks
    model.eval()


def test_target_layer_must_belong_to_model(model):
    with pytest.raises(ValueError, match="not a module of model"):
        GradCAM(model, torch.nn.Conv2d(3, 3, 3))


def test_overlay_blends_heatmap_onto_image():
    image = torch.full((3, 8, 8), 0.5)
    cam = torch.zeros(8, 8)
    cam[:4] = 1.0
    out = overlay(image, cam, alpha=0.4)
    assert out.shape == (8, 8, 3) and out.min() >= 0 and out.max() <= 1
    assert not np.allclose(out[0, 0], out[7, 7]), "hot and cold regions must differ in colour"
    assert np.allclose(overlay(image, cam, alpha=0.0), 0.5)
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, torch.zeros(4, 4))
