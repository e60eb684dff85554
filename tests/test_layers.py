"""The architecture's rules (docs/architecture.md), checked on the source: what each layer may
import, where gradio may appear, and how long a file may grow."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCIENCE = ["steering/model", "steering/objectives", "steering/training", "steering/evaluation"]
SCIENCE_FILES = [
    "steering/weights.py",
    "steering/errors.py",
    "steering/prompts.py",
    "steering/model_files.py",
]
PAGE = {"app.py", "app_plots.py"}
MAX_LINES = 600


def sources() -> list[Path]:
    files = [ROOT / "app.py", ROOT / "app_plots.py"]
    for package in ("steering", "storage", "benchmarks"):
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def imported(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def files_in(*places: str) -> list[Path]:
    found = []
    for place in places:
        path = ROOT / place
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return found


@pytest.mark.parametrize("path", files_in(*SCIENCE, *SCIENCE_FILES), ids=str)
def test_the_science_imports_neither_the_page_storage_nor_serving(path):
    bad = {n for n in imported(path) if under(n, "gradio", "storage", "steering.serve", "app")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", files_in("steering/serve"), ids=str)
def test_serving_never_imports_the_page(path):
    bad = {n for n in imported(path) if under(n, "gradio", "app", "app_plots", "steering.bench")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", files_in("storage"), ids=str)
def test_storage_imports_neither_torch_nor_steering(path):
    bad = {n for n in imported(path) if under(n, "torch", "steering", "gradio")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_gradio_lives_only_in_the_page():
    users = {
        p.relative_to(ROOT).as_posix()
        for p in sources()
        if any(under(n, "gradio") for n in imported(p))
    }
    assert users <= PAGE, users - PAGE


def test_no_source_file_is_over_the_limit():
    long = {
        p.relative_to(ROOT).as_posix(): n
        for p in sources()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long
    assert len((ROOT / "app.py").read_text(encoding="utf-8").splitlines()) <= 500
