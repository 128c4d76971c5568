"""A run's files on any file system `tf.io.gfile` reaches: local folders, `gs://` buckets,
TensorFlow's in-memory `ram://` (for tests).

A file is never seen half-written under its final name: it is written under a temporary
name in the same folder and renamed into place. On a local disk the rename is atomic; on a
bucket it is a server-side copy of the finished object followed by a delete, so the final
name only ever holds a complete object. Whatever needs a local file (a `.keras` archive for
Keras, a folder for matplotlib) goes through `local_file` / `local_folder`, which copy from
and to the remote path.
"""

import contextlib
import os
import re
import shutil
import tempfile

# A temporary file's marker: hidden from globs of final names, removed after a kill.
PARTIAL = ".partial-"

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def is_local(path):
    """Whether `path` is on the local file system (no `scheme://`)."""
    return not _SCHEME.match(os.fspath(path))


def join(*parts):
    """`os.path.join`, which keeps `gs://bucket/run` and `ram://x` intact."""
    return os.path.join(*map(os.fspath, parts))


def exists(path):
    return _gfile().exists(os.fspath(path))


def isdir(path):
    return _gfile().isdir(os.fspath(path))


def makedirs(path):
    _gfile().makedirs(os.fspath(path))


def glob(pattern):
    """Sorted paths matching `pattern`."""
    return sorted(_gfile().glob(os.fspath(pattern)))


def remove(path):
    _gfile().remove(os.fspath(path))


def rename(source, target):
    """Moves `source` over `target` (replacing it)."""
    _gfile().rename(os.fspath(source), os.fspath(target), overwrite=True)


def open_file(path, mode="r"):
    return _gfile().GFile(os.fspath(path), mode)


def read_text(path):
    with open_file(path, "r") as handle:
        return handle.read()


def temporary_name(path):
    """A hidden name beside `path` for writing it (see `remove_partial_files`)."""
    folder, name = os.path.split(os.fspath(path))
    return join(folder, f".{name}{PARTIAL}{os.getpid()}")


def write_text_atomically(path, text):
    """Writes `text` to `path` through a temporary file and a rename."""
    temporary = temporary_name(path)
    try:
        with open_file(temporary, "w") as handle:
            handle.write(text)
        rename(temporary, path)
    finally:
        if exists(temporary):
            remove(temporary)


def copy_atomically(local_path, path):
    """Copies the local file `local_path` to `path` (any file system) through a temporary
    file and a rename."""
    temporary = temporary_name(path)
    try:
        _gfile().copy(os.fspath(local_path), temporary, overwrite=True)
        rename(temporary, path)
    finally:
        if exists(temporary):
            remove(temporary)


def remove_partial_files(folder):
    """Removes the temporary files a killed process left in `folder`."""
    for path in glob(join(folder, f".*{PARTIAL}*")):
        try:
            remove(path)
        except OSError:
            pass


@contextlib.contextmanager
def local_file(path):
    """A local path holding `path`'s contents: `path` itself when it is local, else a
    temporary copy (removed afterwards). The name keeps `path`'s extension."""
    path = os.fspath(path)
    if is_local(path):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="keras_silc_")
    try:
        local = os.path.join(folder, os.path.basename(path) or "file")
        if exists(path):
            _gfile().copy(path, local, overwrite=True)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def local_folder(path):
    """A local folder whose files end up in `path`: `path` itself when it is local, else a
    temporary folder whose files are copied (each atomically) to `path` on a clean exit."""
    path = os.fspath(path)
    if is_local(path):
        os.makedirs(path, exist_ok=True)
        yield path
        return
    folder = tempfile.mkdtemp(prefix="keras_silc_")
    try:
        yield folder
        for root, _, names in os.walk(folder):
            relative = os.path.relpath(root, folder)
            target = path if relative == "." else join(path, relative)
            makedirs(target)
            for name in names:
                copy_atomically(os.path.join(root, name), join(target, name))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
