"""One repository URL: pyproject.toml's [project.urls] names it, and every notebook's install
cell and "Open in Colab" link and README's install line carry that same URL;
scripts/set_repository_url.py moves them all at once."""

import glob
import importlib.util
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.backend_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "set_repository_url.py")
NOTEBOOKS = ["quickstart", "own_data", "segmentation", "backends", "pretrained"]
GIT_URL = re.compile(r"git\+(https?://[^\s\"'@]+)")
GITHUB_LINK = re.compile(r"https://github\.com/[^\s\"')\]]+")
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^\s\"')\]]+")


def _urls(root):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with open(os.path.join(root, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)["project"]["urls"]


def _notebook(root, name):
    with open(os.path.join(root, "examples", f"{name}.ipynb"), encoding="utf-8") as handle:
        return json.load(handle)


def _source(cell):
    return "".join(cell["source"])


def _install_cell(notebook):
    cells = [_source(c) for c in notebook["cells"] if "%pip install" in _source(c)]
    assert len(cells) == 1, "each notebook has one install cell"
    return cells[0]


def _problems(root):
    """Every place that names another repository than pyproject.toml's, as messages."""
    urls = _urls(root)
    repository = urls["Repository"]
    owner_name = repository.removeprefix("https://github.com/")
    problems = []
    if urls.get("Homepage") != repository or urls.get("Issues") != f"{repository}/issues":
        problems.append(f"pyproject.toml: Homepage and Issues do not follow {repository}: {urls}")
    for name in NOTEBOOKS:
        notebook = _notebook(root, name)
        install = _install_cell(notebook)
        named = GIT_URL.findall(install)
        if named != [repository]:
            problems.append(f"{name}.ipynb installs from {named}, not [{repository!r}]")
        colab = (
            f"https://colab.research.google.com/github/{owner_name}/blob/main/examples/{name}.ipynb"
        )
        first = _source(notebook["cells"][0])
        if colab not in first:
            problems.append(f"{name}.ipynb: no 'Open in Colab' link {colab} in its first cell")
        text = "".join(_source(cell) for cell in notebook["cells"])
        for link in COLAB_LINK.findall(text):
            if link != colab:
                problems.append(f"{name}.ipynb links to {link}, not {colab}")
        for link in GITHUB_LINK.findall(text):
            if link != repository and not link.startswith(f"{repository}/"):
                problems.append(f"{name}.ipynb links to {link}, outside {repository}")
    with open(os.path.join(root, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    named = GIT_URL.findall(readme)
    if not named:
        problems.append("README.md has no install line from the repository (git+URL)")
    problems += [
        f"README.md installs from {url}, not {repository}" for url in named if url != repository
    ]
    for link in COLAB_LINK.findall(readme):
        if not link.startswith(f"https://colab.research.google.com/github/{owner_name}/"):
            problems.append(f"README.md links to {link}, not to {owner_name}")
    return problems


def test_every_install_line_and_colab_link_names_the_repository_in_pyproject():
    assert _urls(ROOT)["Repository"].startswith("https://github.com/")
    assert _problems(ROOT) == []


def _copy(root):
    """The files that name the URL, in a folder of their own."""
    os.makedirs(os.path.join(root, "examples"))
    for path in ["pyproject.toml", "README.md"] + [f"examples/{n}.ipynb" for n in NOTEBOOKS]:
        shutil.copy(os.path.join(ROOT, path), os.path.join(root, path))
    return str(root)


def test_a_notebook_that_names_another_repository_is_caught(tmp_path):
    root = _copy(tmp_path)
    path = os.path.join(root, "examples", "backends.ipynb")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    old = _urls(ROOT)["Repository"]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text.replace(f"git+{old}", "git+https://github.com/someone/else", 1))
    assert _problems(root) == [
        f"backends.ipynb installs from ['https://github.com/someone/else'], not [{old!r}]",
        f"backends.ipynb links to https://github.com/someone/else, outside {old}",
    ]


def test_set_repository_url_rewrites_every_copy_in_one_command(tmp_path):
    root = _copy(tmp_path)
    old = _urls(ROOT)["Repository"]
    new = "https://github.com/a-fork/keras-silc-fork"
    run = subprocess.run(
        [sys.executable, SCRIPT, new + ".git", "--root", root],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"repository URL: {new} (7 files changed)" in run.stdout
    assert _urls(root) == {"Homepage": new, "Repository": new, "Issues": f"{new}/issues"}
    assert _problems(root) == []
    for path in glob.glob(os.path.join(root, "**", "*.*"), recursive=True):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        assert old not in text and "github/keras-silc/keras-silc/" not in text, path
    first = _source(_notebook(root, "own_data")["cells"][0])
    assert (
        "colab.research.google.com/github/a-fork/keras-silc-fork/blob/main/examples/own_data"
        in first
    )


def test_set_repository_url_refuses_an_address_colab_cannot_open(tmp_path):
    root = _copy(tmp_path)
    run = subprocess.run(
        [sys.executable, SCRIPT, "https://gitlab.com/me/keras-silc", "--root", root],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "https://github.com/OWNER/NAME" in run.stderr and "gitlab.com" in run.stderr
    assert _problems(root) == [] and _urls(root) == _urls(ROOT)  # nothing was written


class _Shell:
    """Stands in for IPython: records the %pip line as IPython expands it."""

    def __init__(self, namespace):
        self.namespace = namespace
        self.magics = []

    def run_line_magic(self, name, line, _stack_depth=1):
        from IPython.utils.text import DollarFormatter

        self.magics.append((name, DollarFormatter().format(line, **self.namespace)))


def _run_install_cell(source):
    """Executes an install cell with keras_silc not importable; returns the %pip lines."""
    from IPython.core.inputtransformer2 import TransformerManager

    namespace = {}
    shell = _Shell(namespace)
    namespace["get_ipython"] = lambda: shell
    exec(TransformerManager().transform_cell(source), namespace)
    return shell.magics


@pytest.mark.parametrize("wheel", [None, "keras_silc-0.3.0-py3-none-any.whl"])
def test_the_install_cell_takes_an_uploaded_wheel_else_the_repository(wheel, tmp_path, monkeypatch):
    pytest.importorskip("IPython")
    from packaging.requirements import Requirement

    cells = {_install_cell(_notebook(ROOT, name)) for name in NOTEBOOKS}
    assert len(cells) == 1, "every notebook installs the same way"
    monkeypatch.chdir(tmp_path)
    if wheel:
        (tmp_path / wheel).write_bytes(b"")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "keras_silc" else find_spec(name, *a),
    )
    ((magic, line),) = _run_install_cell(cells.pop())
    command = shlex.split(line)
    assert magic == "pip" and command[:2] == ["install", "-q"] and len(command) == 3
    requirement = Requirement(command[2])
    # Only the extras Colab lacks: its own GPU builds of jax and torch stay.
    assert requirement.name == "keras-silc" and requirement.extras == {"tfds", "plots"}
    if wheel:
        assert requirement.url == pathlib.Path(tmp_path / wheel).resolve().as_uri()
    else:
        assert requirement.url == "git+" + _urls(ROOT)["Repository"]


def test_the_install_cell_does_nothing_where_keras_silc_is_installed():
    pytest.importorskip("IPython")
    assert _run_install_cell(_install_cell(_notebook(ROOT, "quickstart"))) == []
