"""Points the project at another repository (a fork) in one command:

    python scripts/set_repository_url.py https://github.com/OWNER/NAME

The URL's one source is `[project.urls]` in pyproject.toml; this rewrites it there and in
every copy: the notebooks' install cells and "Open in Colab" links (examples/*.ipynb) and
README.md's install line. tests/test_install_links.py checks that they agree.
"""

import argparse
import glob
import os
import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GITHUB_URL = re.compile(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?")
COLAB = "https://colab.research.google.com/github/"


def repository_url(root=ROOT):
    """The repository URL that pyproject.toml's [project.urls] names."""
    with open(os.path.join(root, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)["project"]["urls"]["Repository"]


def colab_prefix(url):
    """Where Colab opens the repository's files from: COLAB + "OWNER/NAME"."""
    match = GITHUB_URL.fullmatch(url)
    if match is None:
        raise ValueError(
            f"The repository URL must be a GitHub repository's address, "
            f"https://github.com/OWNER/NAME (Colab opens the notebooks from GitHub); got {url!r}."
        )
    return f"{COLAB}{match[1]}/{match[2]}"


def files_naming_the_url(root=ROOT):
    """pyproject.toml, README.md and the notebooks, the files that carry the URL."""
    notebooks = sorted(glob.glob(os.path.join(root, "examples", "*.ipynb")))
    return [os.path.join(root, "pyproject.toml"), os.path.join(root, "README.md"), *notebooks]


def set_repository_url(new_url, root=ROOT):
    """Replaces the current repository URL (and its Colab links) with `new_url` in every
    file that names it; returns the paths it changed."""
    new_url = new_url.rstrip("/").removesuffix(".git")
    new_colab = colab_prefix(new_url)
    old_url = repository_url(root)
    # Followed by neither a name character nor "-": a longer name is another repository.
    rewrites = [
        (re.compile(re.escape(old_url) + r"(?![\w-])"), new_url),
        (re.compile(re.escape(colab_prefix(old_url)) + r"(?![\w-])"), new_colab),
    ]
    changed = []
    for path in files_naming_the_url(root):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        new_text = text
        for pattern, replacement in rewrites:
            new_text = pattern.sub(lambda _, r=replacement: r, new_text)
        if new_text != text:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(new_text)
            changed.append(path)
    return changed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the new repository, https://github.com/OWNER/NAME")
    parser.add_argument("--root", default=ROOT, help="the checkout (default: this one)")
    args = parser.parse_args(argv)
    try:
        changed = set_repository_url(args.url, args.root)
    except ValueError as error:
        parser.error(str(error))
    for path in changed:
        print("rewrote", os.path.relpath(path, args.root))
    print(f"repository URL: {repository_url(args.root)} ({len(changed)} files changed)")


if __name__ == "__main__":
    sys.exit(main())
