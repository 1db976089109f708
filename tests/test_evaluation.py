"""The one evaluation path: predictions in eval mode, test-time augmentation, and the same figures for training and the report."""

import pytest
import torch

from conftest import TinyNet
from PyTorch_Vision.config import TrainConfig
from PyTorch_Vision.data import make_batches
from PyTorch_Vision.evaluation import Predictions, confusion_matrix, misclassified, per_class_accuracy, predict, \
    tta_views
from PyTorch_Vision.train import fit


def test_misclassified_most_confident_first():
    preds = Predictions(labels=torch.tensor([0, 1, 2, 3, 4]), predicted=torch.tensor([0, 2, 2, 1, 0]),
                        confidence=torch.tensor([.9, .5, .8, .7, .95]), loss=1.0)
    assert misclassified(preds, 10).tolist() == [4, 3, 1]
    assert misclassified(preds, 2).tolist() == [4, 3]
    assert preds.accuracy == pytest.approx(40.0)


def test_predict_with_flip_tta_averages_image_and_mirror():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3)).train()
    x, y = torch.randn(5, 3, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    plain = predict(model, [(x, y)])
    tta = predict(model, [(x, y)], tta="flip")
    expected = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
    torch.testing.assert_close(tta.confidence, expected.max(1).values)
    assert torch.equal(tta.predicted, expected.argmax(1))
    torch.testing.assert_close(plain.confidence, model(x).softmax(1).max(1).values)
    assert plain.loss == pytest.approx(torch.nn.functional.cross_entropy(model(x), y).item(), rel=1e-6)
    assert model.training and torch.equal(tta.images, x)
    assert predict(model, [(x, y)], keep_images=False).images is None


def test_flip_shift_views_are_airbenchs_moves_with_weights_summing_to_one():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    views = tta_views(x, "flip-shift")
    assert [w for _, w in views] == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    assert torch.equal(views[0][0], x) and torch.equal(views[1][0], x.flip(-1))
    down_right, up_left = views[2][0], views[4][0]
    assert torch.equal(down_right[..., 1:, 1:], x[..., :-1, :-1])  # content moved 1 px down and right
    assert torch.equal(up_left[..., :-1, :-1], x[..., 1:, 1:])
    assert torch.equal(down_right[..., 0, 1:], x[..., 1, :-1])  # the border row reflected, not repeated
    assert torch.equal(views[3][0], down_right.flip(-1)) and torch.equal(views[5][0], up_left.flip(-1))
    assert [w for _, w in tta_views(x, "none")] == [1.0]
    with pytest.raises(ValueError, match="tta must be one of none, flip, flip-shift"):
        tta_views(x, "shift")


def test_predict_with_flip_shift_tta_averages_the_weighted_views():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3))
    x, y = torch.randn(5, 3, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    got = predict(model, [(x, y)], tta="flip-shift")
    expected = sum(w * model(v).softmax(1) for v, w in tta_views(x, "flip-shift"))
    torch.testing.assert_close(got.confidence, expected.max(1).values)
    assert got.loss == pytest.approx(torch.nn.functional.cross_entropy(model(x), y).item(), rel=1e-6)


def test_predict_runs_in_eval_mode_and_restores_train_mode(tiny_data):
    """A model handed over in train mode: BatchNorm must use, not update, its running statistics."""
    torch.manual_seed(0)
    model = TinyNet()
    with torch.no_grad():  # running statistics that differ from a batch's own
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32) * 3 + 1)
    model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    _, test_batches = make_batches(tiny_data, 32, torch.device("cpu"))
    preds = predict(model, test_batches)
    assert model.training, "the caller's mode is restored"
    assert all(torch.equal(stats[k], model.state_dict()[k]) for k in stats), "running statistics must not change"
    model.eval()
    with torch.no_grad():
        expected = torch.cat([model(x).softmax(1).max(1).values for x, _ in test_batches])
    torch.testing.assert_close(preds.confidence, expected)


@pytest.mark.slow
def test_the_report_and_the_history_give_one_accuracy_for_one_model(tiny_data, tmp_path):
    from PyTorch_Vision.report import make_report
    from PyTorch_Vision.models import ResNet18

    config = TrainConfig(epochs=1, batch_size=32, max_lr=0.05, seed=0)  # 6 batches, a warm-up of 2
    torch.manual_seed(0)
    model = ResNet18()
    history = fit(model, tiny_data, config, device="cpu", progress="none")
    report = make_report(model, tiny_data, history, config, "cpu", tmp_path)
    assert report.predictions.accuracy == history.test_acc[-1]
    assert report.predictions.loss == pytest.approx(history.test_loss[-1], rel=1e-6)
    summary = dict(report.headline)
    assert summary["final test accuracy (epoch 1)"] == f"**{history.test_acc[-1]:.2f}%**"
    assert summary["other settings than the recipe's"] == "none"
    assert summary["device, precision"].startswith("CPU") and "processes" not in summary["device, precision"]
    assert summary["seed, batch size, max LR"] == "0, 32, 0.05 (peaked at 0.001: a warm-up under 100 batches)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion_matrix.png", "loss_accuracy.png",
                                                          "misclassified.png", "misclassified_gradcam.png"]
    assert len(report.wrong) == min(10, int((report.predictions.predicted != report.predictions.labels).sum()))
    assert "layer4.1" in report.gradcam._suptitle.get_text()
    from PyTorch_Vision.transforms import batch_normalize
    images = batch_normalize(torch.from_numpy(tiny_data.train_images).permute(0, 3, 1, 2), tiny_data.mean,
                             tiny_data.std)
    with torch.no_grad():
        fitted = model.eval()(images).argmax(1) == torch.from_numpy(tiny_data.train_labels)
    assert report.train_plain == pytest.approx(100 * fitted.float().mean().item(), abs=1e-4)
    assert summary["final model on the training images, unaugmented / with one CutOut square on each"] == \
        f"{report.train_plain:.2f}% / {report.train_cutout:.2f}%"
    assert report.precision == history.run["precision"], "evaluated in the precision the run trained in"


def test_a_model_without_mistakes_gets_a_report_too(tiny_data, tmp_path):
    """Every test image right (here: a test set of one class and a model that always says it): galleries say so."""
    from PyTorch_Vision.data import make_data
    from PyTorch_Vision.history import History
    from PyTorch_Vision.report import make_report

    class AlwaysFirst(TinyNet):
        def forward(self, x):
            return super().forward(x) + torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10) * 1e3

    keep = tiny_data.test_labels == 0
    data = make_data(tiny_data.train_images, tiny_data.train_labels, tiny_data.test_images[keep],
                     tiny_data.test_labels[keep], tiny_data.classes, "one class")
    model = AlwaysFirst()
    model.layer4 = torch.nn.Sequential(torch.nn.Identity(), model.features)  # a GradCAM target named layer4.1
    history = History()
    history.append(epoch=1, train_loss=1.0, train_acc=50.0, test_loss=0.0, test_acc=100.0, lr=0.1, epoch_seconds=1)
    report = make_report(model, data, history, TrainConfig(batch_size=32), "cpu", tmp_path)
    assert report.predictions.accuracy == 100.0 and len(report.wrong) == 0
    assert "No misclassified test images" in report.gradcam.texts[0].get_text()
    assert (tmp_path / "misclassified_gradcam.png").stat().st_size > 0


@pytest.mark.slow
def test_the_gallery_can_title_each_heatmap_with_its_deletion_gap(tiny_data):
    from PyTorch_Vision.faithfulness import deletion_curves
    from PyTorch_Vision.gradcam import GradCAM
    from PyTorch_Vision.history import History
    from PyTorch_Vision.models import ResNet18
    from PyTorch_Vision.report import gradcam_gallery, make_report

    torch.manual_seed(0)
    model = ResNet18().eval()
    history = History()
    history.append(epoch=1, train_loss=1.0, train_acc=10.0, test_loss=2.0, test_acc=10.0, lr=0.1, epoch_seconds=1)
    report = make_report(model, tiny_data, history, TrainConfig(batch_size=32), "cpu", n_wrong=3)
    assert "layer4.1" in report.gradcam._suptitle.get_text()
    assert [ax.get_title() for ax in report.gradcam.axes[1::3]] == [
        f"CAM pred: {tiny_data.classes[p]}" for p in report.predictions.predicted[report.wrong]]
    gallery = gradcam_gallery(model, tiny_data, report.predictions, report.wrong, "layer3.1", "blur", seed=0)
    inputs, predicted = report.predictions.images[report.wrong], report.predictions.predicted[report.wrong]
    cams = GradCAM(model, model.layer3[-1])(inputs, predicted)
    gaps = deletion_curves(model, inputs, predicted, cams, fill="blur",
                           generator=torch.Generator().manual_seed(0)).deletion_gap
    titles = [ax.get_title() for ax in gallery.axes[1::3]]
    assert titles == [f"CAM pred: {tiny_data.classes[p]}\ndeletion gap {g:.2f}" for p, g in zip(predicted, gaps)]
    assert "layer3.1, deletion gaps with the blur fill" in gallery._suptitle.get_text()


def test_confusion_matrix_and_per_class_accuracy():
    labels, predicted = torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 0])
    m = confusion_matrix(labels, predicted, 3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert per_class_accuracy(labels, predicted, 3).tolist() == [50.0, 100.0, 0.0]
