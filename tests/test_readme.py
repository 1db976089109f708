"""The README's results section must be the committed run's plots/history.json, as `results` prints it."""
from pathlib import Path

from PyTorch_Vision.history import History, results_markdown

ROOT = Path(__file__).resolve().parents[1]
START = "<!-- results: python -m PyTorch_Vision results plots/history.json -->"
END = "<!-- /results -->"
FIGURES = ("loss_accuracy.png", "misclassified.png", "misclassified_gradcam.png")


def test_readme_results_are_the_committed_history():
    readme = (ROOT / "README.md").read_text()
    history = ROOT / "plots" / "history.json"
    if not history.exists():
        assert START not in readme, "the README shows results but plots/history.json is not committed"
        return
    assert START in readme and END in readme, f"the README needs a results section between {START} and {END}"
    section = readme[readme.index(START) + len(START):readme.index(END)].strip()
    assert section == results_markdown(History.load(history)), \
        "README results differ from plots/history.json: paste `python -m PyTorch_Vision results plots/history.json`"
    for name in FIGURES:
        assert (ROOT / "plots" / name).stat().st_size > 0 and f"plots/{name}" in readme, name
