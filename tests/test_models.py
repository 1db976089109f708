import torch

from PyTorch_Vision.models import ResNet18, ResNet34, layer_table


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def test_resnet18_parameter_count_and_shapes():
    model = ResNet18()
    assert count_parameters(model) == 11_173_962
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    features = {}
    model.layer4[-1].register_forward_hook(lambda m, i, o: features.update(layer4=o.shape))
    model.layer3[-1].register_forward_hook(lambda m, i, o: features.update(layer3=o.shape))
    model(x)
    assert features == {"layer4": (2, 512, 4, 4), "layer3": (2, 256, 8, 8)}


def test_resnet34_parameter_count():
    assert count_parameters(ResNet34()) == 21_282_122


def test_layer_table_on_cpu_leaves_model_untouched():
    model = ResNet18().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    text = layer_table(model)
    assert "Total params: 11,173,962" in text and "Linear-" in text
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
