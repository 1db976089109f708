"""The package's shape: few modules of a readable size, the training step and epoch on one screen, imports running one
way, figures in plots.py, a short README and short notebook prose."""
import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "PyTorch_Vision"
MAX_MODULES, MAX_PACKAGE_LINES, MAX_LINES, README_LINES, README_WIDTH = 14, 2320, 450, 90, 120
MAX_FUNCTION_LINES, LOOP_LINES = 60, 75
NOTEBOOK_PROSE_LINES = 6  # a markdown cell says what the next cell shows; detail lives in docs/


def non_blank_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def package_imports(path: Path) -> dict[str, set[str]]:
    """{module imported from this package: names imported}, from a module's relative imports."""
    found: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.setdefault(node.module, set()).update(alias.name for alias in node.names)
    return found


def modules() -> dict[str, int]:
    """{module: lines (wc -l)} of the package, __init__.py aside."""
    return {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}


def test_the_package_is_few_modules_of_a_readable_size():
    sizes = modules()
    assert len(sizes) <= MAX_MODULES, f"{len(sizes)} modules: merge what is one job"
    assert not {name: n for name, n in sizes.items() if n > MAX_LINES}, f"modules over {MAX_LINES} lines: {sizes}"
    assert sum(sizes.values()) <= MAX_PACKAGE_LINES, f"{sum(sizes.values())} lines in all: {sizes}"


def test_functions_fit_on_a_screen_and_the_step_and_the_epoch_read_in_one():
    lengths = {}
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths[f"{path.stem}.{node.name}"] = node.end_lineno - node.lineno + 1
    assert not {name: n for name, n in lengths.items() if n > MAX_FUNCTION_LINES}, "split these functions"
    loop = lengths["train.step"] + lengths["train.train_one_epoch"]
    assert loop <= LOOP_LINES, f"Trainer.step and train_one_epoch take {loop} lines"


def test_imports_run_one_way():
    graph = {p.stem: set(package_imports(p)) for p in PACKAGE.glob("*.py")}
    done, path = set(), []

    def visit(module):
        assert module not in path, "import cycle: " + " -> ".join(path[path.index(module):] + [module])
        if module in done:
            return
        path.append(module)
        for imported in graph.get(module, ()):
            visit(imported)
        path.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_figures_live_in_plots_and_utils_imports_nothing_of_the_package():
    utils_tree = ast.parse((PACKAGE / "utils.py").read_text())
    defined = {node.name for node in utils_tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert not {name for name in defined if name.startswith("plot_") or name == "show_images"}, \
        "figures belong in plots.py"
    assert not package_imports(PACKAGE / "utils.py"), "utils imports nothing of the package"


def test_importing_the_training_code_does_not_load_matplotlib():
    code = "import sys, PyTorch_Vision.train, PyTorch_Vision.data; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_readme_is_short_and_holds_the_two_commands():
    text = (ROOT / "README.md").read_text()
    readme = text.splitlines()
    assert len(readme) <= README_LINES, f"README.md has {len(readme)} lines; move detail to docs/"
    wide = [i for i, line in enumerate(readme, 1) if len(line) > README_WIDTH]
    assert not wide, f"README.md lines {wide} are over {README_WIDTH} characters"
    shell_lines = text.replace(" \\\n", " ").splitlines()  # a command continued with a backslash is one line
    commands = [" ".join(line.split()) for line in shell_lines if line.startswith("python3 -m venv .venv && ")]
    assert len(commands) == 2 and "PyTorch_Vision train" in commands[0] and "pytest --nbmake" in commands[1]


def test_the_notebooks_markdown_cells_are_short():
    cells = json.loads((ROOT / "S11_ResNet18.ipynb").read_text())["cells"]
    prose = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    long = [text.splitlines()[0] for text in prose if sum(1 for line in text.splitlines() if line.strip())
            > NOTEBOOK_PROSE_LINES]
    assert not long, f"markdown cells over {NOTEBOOK_PROSE_LINES} lines (move detail to docs/): {long}"
    wide = [line for text in prose for line in text.splitlines() if len(line) > README_WIDTH and "://" not in line]
    assert not wide, f"notebook markdown lines over {README_WIDTH} characters: {wide}"
