"""The results the README and docs/RUN.md show must be the committed run's plots/history.json, as `results` prints
it: the headline figures in the README, every epoch in docs/RUN.md."""
from pathlib import Path

import pytest

from PyTorch_Vision.history import History, results_markdown

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python -m PyTorch_Vision results plots/history.json"
END = "<!-- /results -->"
FIGURES = ("loss_accuracy.png", "misclassified.png", "misclassified_gradcam.png")


@pytest.mark.parametrize("page,option,epochs", [("README.md", " --headline", False), ("docs/RUN.md", "", True)])
def test_results_are_the_committed_history(page, option, epochs):
    text = (ROOT / page).read_text()
    start = f"<!-- results: {COMMAND}{option} -->"
    history = ROOT / "plots" / "history.json"
    if not history.exists():
        assert start not in text, f"{page} shows results but plots/history.json is not committed"
        return
    assert start in text and END in text, f"{page} needs a results section between {start} and {END}"
    section = text[text.index(start) + len(start):text.index(END)].strip()
    assert section == results_markdown(History.load(history), epochs), \
        f"{page}'s results differ from plots/history.json: paste `{COMMAND}{option}`"


def test_readme_shows_the_committed_figures():
    readme = (ROOT / "README.md").read_text()
    for name in FIGURES:
        assert (ROOT / "plots" / name).stat().st_size > 0 and f"plots/{name}" in readme, name
