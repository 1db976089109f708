import matplotlib.figure
import torch

from PyTorch_Vision.history import History
from PyTorch_Vision.plots import plot_confusion, plot_history, plot_misclassified, show_images


def test_figures_are_returned_and_saved(tmp_path):
    h = History()
    for e in range(1, 4):
        h.append(epoch=e, train_loss=2.0 / e, train_acc=30.0 * e, test_loss=2.1 / e, test_acc=29.0 * e,
                 lr=0.1, epoch_seconds=1.0)
    fig = plot_history(h, tmp_path / "plots" / "curves.png")
    assert isinstance(fig, matplotlib.figure.Figure) and (tmp_path / "plots" / "curves.png").stat().st_size > 0
    labels = {ax.get_xlabel() for ax in fig.axes} | {ax.get_ylabel() for ax in fig.axes}
    assert {"epoch", "loss (cross-entropy)", "accuracy (%)"} <= labels
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]

    images = torch.rand(3, 3, 8, 8)
    fig = plot_misclassified(images, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0]), torch.tensor([.9, .8, .7]),
                             ["a", "b", "c"], ncols=3, path=tmp_path / "wrong.png")
    assert fig.axes[0].get_title() == "true: a\npred: b (90%)"
    assert (tmp_path / "wrong.png").exists()
    assert len(show_images(images, 1, 3).axes) == 3
    fig = plot_confusion(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 0]), ["a", "b", "c"], tmp_path / "cm.png")
    assert "66.67%" in fig.axes[0].get_title()
