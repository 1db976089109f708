"""Progress output: a widget bar in notebooks that can draw one, text elsewhere."""
import pytest


def test_progress_bar_is_a_widget_in_a_notebook_with_ipywidgets_and_text_elsewhere(monkeypatch):
    import warnings

    import tqdm.notebook
    import tqdm.std

    import PyTorch_Vision.history as progress_module
    from PyTorch_Vision.history import progress_bar

    bar = progress_bar(3, "outside")
    assert type(bar) is tqdm.std.tqdm
    bar.close()
    monkeypatch.setattr(progress_module, "in_notebook", lambda: True)
    pytest.importorskip("ipywidgets")
    bar = progress_bar(3, "widgets")
    assert isinstance(bar, tqdm.notebook.tqdm)
    bar.close()
    real_find_spec = progress_module.importlib.util.find_spec
    monkeypatch.setattr(progress_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "ipywidgets" else real_find_spec(name, *a))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "IProgress not found" warning, red in a notebook
        bar = progress_bar(3, "no widgets")
    assert type(bar) is tqdm.std.tqdm
    bar.close()


def test_in_notebook_recognises_jupyter_and_colab_kernels(monkeypatch):
    import sys
    import types

    from PyTorch_Vision.history import in_notebook

    class ZMQInteractiveShell:
        pass

    class ColabShell(ZMQInteractiveShell):
        pass

    class TerminalInteractiveShell:
        pass

    for shell, expected in [(ColabShell(), True), (ZMQInteractiveShell(), True), (TerminalInteractiveShell(), False),
                            (None, False)]:
        monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda s=shell: s))
        assert in_notebook() is expected
    monkeypatch.delitem(sys.modules, "IPython")
    assert in_notebook() is False
