"""Every repository path that README.md and docs/*.md name exists in git.

A path is named either as a Markdown link's target (resolved from the document's folder, as a
reader's browser does) or as a token in the text, code spans and code blocks included, that
starts with one of the repository's tracked top-level folders (`benchmarks/x.py`,
`docs/runs/...`, `examples/y.ipynb`), resolved from the repository's root. Not paths of the
repository: URLs, anchors, home folders (`~/...`), outputs that users make (`runs/...`, not
tracked) and placeholders (`<row>`, `{k}`, `*`).
"""

import os
import re
import subprocess

import pytest

pytestmark = pytest.mark.backend_independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLACEHOLDER = re.compile(r"[<>{}*$]|\.\.\.")
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def tracked_files():
    try:
        listed = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return set(listed.split())


def documents(files):
    return sorted(
        path
        for path in files
        if path == "README.md" or (path.startswith("docs/") and path.count("/") == 1)
        if path.endswith(".md")
    )


def named_paths(document, text, folders):
    """(path from the root, as written) for every repository path `text` names."""
    found = []
    for target in LINK.findall(text):
        target = target.split("#", 1)[0]
        if not target or "://" in target or target.startswith(("mailto:", "~", "/")):
            continue
        if PLACEHOLDER.search(target):
            continue
        resolved = os.path.normpath(os.path.join(os.path.dirname(document), target))
        found.append((resolved, target))
    start = r"(?<![\w/.~-])((?:" + "|".join(map(re.escape, folders)) + r")/[\w./-]*)"
    for match in re.finditer(start, text):
        token = match.group(1).rstrip(".,:;")
        end = match.end()
        if end < len(text) and PLACEHOLDER.match(text[end:]):
            continue  # e.g. docs/runs/<row>.json: a placeholder
        if PLACEHOLDER.search(token):
            continue
        found.append((os.path.normpath(token), token))
    return found


def test_every_path_the_docs_name_is_in_git():
    files = tracked_files()
    folders = sorted({path.split("/", 1)[0] for path in files if "/" in path})
    directories = {os.path.dirname(path) for path in files}
    for path in list(directories):
        while path:
            path = os.path.dirname(path)
            directories.add(path)
    missing = []
    for document in documents(files):
        with open(os.path.join(ROOT, document), encoding="utf-8") as handle:
            text = handle.read()
        for path, written in named_paths(document, text, folders):
            if path not in files and path not in directories:
                missing.append(f"{document}: {written}")
    assert not missing, "paths named in the docs but not in git:\n" + "\n".join(
        sorted(set(missing))
    )
