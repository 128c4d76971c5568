"""Preset folders in keras-hub's layout: which file holds what, how a folder or handle is read,
and how a folder is written whole or not at all.

    config.json            the model (a serialized Keras object, its preprocessor left out)
    model.weights.h5       its weights (student, teacher, center: everything `save_weights` saves)
    preprocessor.json      the `SilcPreprocessor` (view geometry, augmentation, tokenizer config)
    tokenizer.json         the `SilcTokenizer` config
    assets/tokenizer/      the tokenizer's vocabulary file
    metadata.json          keras_silc, keras and keras-hub versions, backend, date, file list

Reading goes through keras-hub's `get_file`, which resolves local folders, `kaggle://`,
`hf://`, `gs://` (and every other `tf.io.gfile` scheme) and caches what it downloads. This
module turns its failures into errors that name the preset, the file and the fix. It imports
neither `keras_silc.models` nor `keras_silc.data`: both use it.
"""

import datetime
import json
import os
import shutil
import tempfile

import keras
from keras_hub.src.utils import preset_utils

CONFIG_FILE = preset_utils.CONFIG_FILE  # "config.json"
WEIGHTS_FILE = preset_utils.MODEL_WEIGHTS_FILE  # "model.weights.h5"
PREPROCESSOR_FILE = preset_utils.PREPROCESSOR_CONFIG_FILE  # "preprocessor.json"
TOKENIZER_FILE = preset_utils.TOKENIZER_CONFIG_FILE  # "tokenizer.json"
TOKENIZER_ASSET_DIR = preset_utils.TOKENIZER_ASSET_DIR  # "assets/tokenizer"
METADATA_FILE = preset_utils.METADATA_FILE  # "metadata.json"

# Exceptions (by class name, anywhere in the chain) that mean "the host could not be reached",
# whatever the library that raised them: requests, urllib3, huggingface_hub, TensorFlow.
_UNREACHABLE = {
    "ConnectionError",
    "ProxyError",
    "ConnectTimeout",
    "ReadTimeout",
    "Timeout",
    "NewConnectionError",
    "NameResolutionError",
    "MaxRetryError",
    "OfflineModeIsEnabled",
    "LocalEntryNotFoundError",
    "UnavailableError",
    "DeadlineExceededError",
}
_UNREACHABLE_HINTS = ("could not resolve host", "name or service not known", "timed out")


class classproperty(property):  # noqa: N801 (named like `property`)
    """A read-only property of the class, as keras-hub's `Backbone.presets`."""

    def __get__(self, _, owner):
        return self.fget(owner)


def is_handle(preset):
    """Whether `preset` is a URI (`kaggle://`, `hf://`, `gs://`, ...) rather than a path."""
    return "://" in preset


def as_preset(preset, argument="preset"):
    """`preset` as a str (a path-like becomes its path); TypeError for anything else."""
    if isinstance(preset, os.PathLike):
        return os.fspath(preset)
    if not isinstance(preset, str):
        raise TypeError(
            f"{argument} must be a preset name, a folder or a handle (a str), got "
            f"{type(preset).__name__}."
        )
    return preset


def _chain(error):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def unreachable(error):
    """Whether `error`, or an exception it was raised from, means that a host could not be
    reached (offline, a proxy, DNS, a timeout), whichever library raised it."""
    for link in _chain(error):
        if isinstance(link, ConnectionError) or type(link).__name__ in _UNREACHABLE:
            return True
        if any(hint in str(link).lower() for hint in _UNREACHABLE_HINTS):
            return True
    return False


def get_file(preset, path, fix=""):
    """The local path of `path` in the preset folder or handle `preset` (downloaded and cached
    on first use for a handle).

    Raises FileNotFoundError naming the file when the preset lacks it (`fix` is appended to
    the message), and ValueError when a handle cannot be reached (offline, a gated model)."""
    if not is_handle(preset) and not os.path.isdir(preset):
        raise FileNotFoundError(f"No preset folder at {preset!r}.")
    try:
        # A local folder by its absolute path, which keras-hub never mistakes for the name
        # of one of its own presets.
        return preset_utils.get_file(preset if is_handle(preset) else os.path.abspath(preset), path)
    except ImportError:
        raise
    except Exception as error:
        if is_handle(preset) and unreachable(error):
            scheme = preset.split("://")[0]
            raise ValueError(
                f"Could not fetch {path!r} of the preset {preset!r}: "
                f"{type(error).__name__}: {str(error).splitlines()[0]}. A {scheme}:// handle "
                "is downloaded on first use, which needs network access (and credentials for "
                "a gated or private model). Offline, download the preset once where there is "
                "network (its folder holds config.json, model.weights.h5, ...) and pass that "
                "folder instead."
            ) from error
        if isinstance(error, FileNotFoundError):
            raise FileNotFoundError(f"The preset {preset!r} has no {path}.{fix}") from error
        raise


def exists(preset, path):
    """Whether the preset holds `path` (a handle's file is downloaded to find out)."""
    try:
        get_file(preset, path)
    except FileNotFoundError:
        return False
    return True


def read_json(preset, path, fix=""):
    """The parsed JSON file `path` of the preset; errors name the file."""
    local = get_file(preset, path, fix)
    try:
        with open(local, encoding="utf-8") as file:
            return json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} of the preset {preset!r} is not valid JSON ({error}). Write the preset "
            "again with save_to_preset."
        ) from error


def registered_class(config, preset, path, expected=None):
    """The Keras-registered class that the serialized object `config` (read from `path` of
    `preset`) describes, checked against `expected` (a class or None) by keras-hub's
    `check_config_class`."""
    try:
        found = preset_utils.check_config_class(config)
    except (KeyError, TypeError, ValueError) as error:
        name = config.get("registered_name") if isinstance(config, dict) else None
        raise ValueError(
            f"{path} of the preset {preset!r} names no class known to Keras "
            f"(registered_name={name!r}). `import keras_silc` registers keras_silc's classes; "
            "a keras-hub model's preset loads with keras-hub (or `SilcModel.from_keras_hub`)."
        ) from error
    if expected is not None and not (isinstance(found, type) and issubclass(found, expected)):
        raise ValueError(
            f"{path} of the preset {preset!r} describes a {found.__name__}, not a "
            f"{expected.__name__}: load it with {found.__name__}.from_preset({preset!r})."
        )
    return found


def check_listed_files(preset):
    """Raises FileNotFoundError when a file that the preset's metadata.json lists is missing
    (an older folder without metadata.json is not checked). The weights are left to
    `load_weights`, which may not be asked for."""
    if not exists(preset, METADATA_FILE):
        return {}
    metadata = read_json(preset, METADATA_FILE)
    for path in metadata.get("files", []):
        if path != WEIGHTS_FILE:
            get_file(
                preset,
                path,
                f" Its {METADATA_FILE} lists the file: the folder was copied incompletely. "
                "Copy it again, or write it again with save_to_preset.",
            )
    return metadata


def load_weights(model, preset, note=""):
    """Loads the preset's model.weights.h5 into `model`, built from its config.json. A file of
    another architecture raises ValueError naming both files and the shapes that differ."""
    path = get_file(
        preset,
        WEIGHTS_FILE,
        " Pass load_weights=False for the architecture of its config.json with random weights.",
    )
    try:
        model.load_weights(path)
    except OSError as error:  # h5py: not an HDF5 file (truncated, or something else)
        raise ValueError(
            f"{WEIGHTS_FILE} of the preset {preset!r} ({path}) is not a readable weights file "
            f"({str(error).splitlines()[0]}): it is truncated or was replaced. Copy it again, or "
            "write the preset again with save_to_preset."
        ) from None
    except (ValueError, KeyError) as error:
        raise ValueError(
            f"{WEIGHTS_FILE} of the preset {preset!r} does not fit the model of its "
            f"{CONFIG_FILE}{note}: {_shape_difference(model, path)}. The two files must come "
            "from the same save_to_preset: write the preset again, or pass "
            f"load_weights=False to build the architecture alone. (Keras: "
            f"{str(error).splitlines()[0]})"
        ) from error


def _shape_difference(model, path):
    """Which weight shapes the model has and the file lacks, and the reverse."""
    return shape_mismatch(model, path) or "the weights are stored under other names"


def shape_mismatch(model, path):
    """None when the weights file at `path` holds the shapes of `model.weights` (as many of
    each), else which shapes only one of them has. Keras loads a file of fewer or more blocks
    than the model without an error, leaving weights at their initial values."""
    import collections

    import h5py

    in_file = collections.Counter()
    with h5py.File(path, "r") as file:
        file.visititems(
            lambda _, item: (
                in_file.update([tuple(item.shape)]) if isinstance(item, h5py.Dataset) else None
            )
        )
    in_model = collections.Counter(tuple(w.shape) for w in model.weights)

    def listing(counter):
        shapes = sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:4]
        return ", ".join(f"{shape} x{count}" for shape, count in shapes)

    missing, extra = in_model - in_file, in_file - in_model
    if not missing and not extra:
        return None
    return (
        f"the model has {len(model.weights)} weights, the file {sum(in_file.values())}; "
        f"shapes only in the model: {listing(missing) or 'none'}; "
        f"only in the file: {listing(extra) or 'none'}"
    )


# ---------------------------------------------------------------------------- writing
def write_json(directory, path, layer):
    """Writes `layer` serialized, without its compile and build configs (as keras-hub)."""

    def strip(config):
        if isinstance(config, dict):
            for key in ("compile_config", "build_config"):
                config.pop(key, None)
            for value in config.values():
                strip(value)

    config = layer if isinstance(layer, dict) else keras.saving.serialize_keras_object(layer)
    strip(config)
    with open(os.path.join(directory, path), "w", encoding="utf-8") as file:
        json.dump(config, file, indent=2)


def _write_metadata(directory, layer):
    from keras_hub.src.version import __version__ as keras_hub_version

    from keras_silc.version import __version__

    files = sorted(
        os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/")
        for root, _, names in os.walk(directory)
        for name in names
    )
    metadata = {
        "keras_silc_version": __version__,
        "keras_version": keras.version(),
        "keras_hub_version": keras_hub_version,
        "backend": keras.backend.backend(),
        "class_name": type(layer).__name__,
        "parameter_count": int(layer.count_params()) if layer.built else None,
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
        "files": files,
    }
    with open(os.path.join(directory, METADATA_FILE), "w", encoding="utf-8") as file:
        json.dump(metadata, file, indent=2)


def save(directory, layer, write, overwrite=False):
    """Writes a preset folder with `write(folder)` plus metadata.json, all or nothing.

    A local folder is written under a temporary name beside it and renamed into place, so a
    failure leaves no half-written preset. A `gs://` (any `tf.io.gfile`) folder is written
    locally, then copied with config.json last: a folder without config.json is no preset.
    A folder that is not empty is refused unless `overwrite=True`."""
    if not isinstance(overwrite, bool):  # "no" would be truthy and replace the folder
        raise ValueError(f"overwrite must be True or False, got {overwrite!r}.")
    directory = as_preset(directory, "directory")
    if not is_handle(directory):
        _check_local_target(directory)
    if is_handle(directory) and directory.split("://")[0] in ("kaggle", "hf", "modelscope"):
        raise ValueError(
            f"save_to_preset writes a folder (local or gs://), not {directory!r}: save to a "
            "folder, then upload it with keras_hub.upload_preset(uri, folder)."
        )
    gfile = None
    if is_handle(directory):
        import tensorflow as tf

        gfile = tf.io.gfile
    isdir = gfile.isdir if gfile else os.path.isdir
    listdir = gfile.listdir if gfile else os.listdir
    if (gfile.exists if gfile else os.path.exists)(directory):
        if not isdir(directory):
            raise ValueError(f"save_to_preset: {directory!r} is a file, not a folder.")
        if listdir(directory) and not overwrite:
            raise FileExistsError(
                f"save_to_preset: {directory!r} is not empty. Pass overwrite=True to replace "
                "it, or choose a new folder."
            )
    parent = tempfile.gettempdir() if gfile else os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    name = os.path.basename(os.path.normpath(directory)) or "preset"
    staging = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent)
    try:
        write(staging)
        _write_metadata(staging, layer)
        if gfile:
            _copy_to_gfile(staging, directory, gfile, overwrite)
        else:
            _move_into_place(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _check_local_target(directory):
    """Refuses a local preset path that cannot be replaced as a whole: the working folder or
    one above it (renamed away, it would take the current folder with it), or a path under
    a file."""
    if not directory:
        raise ValueError("save_to_preset needs a folder path, got ''.")
    target, here = os.path.abspath(directory), os.getcwd()
    if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
        raise ValueError(
            f"save_to_preset: {directory!r} is the working folder or holds it; save into a "
            "new subfolder, e.g. save_to_preset('my_preset')."
        )
    parent = os.path.dirname(target)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise ValueError(f"save_to_preset: {directory!r} lies under the file {parent!r}.")


def _move_into_place(staging, directory):
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private
    previous = None
    if os.path.isdir(directory):
        if os.listdir(directory):
            previous = staging + ".previous"
            os.rename(directory, previous)
        else:
            os.rmdir(directory)
    try:
        os.rename(staging, directory)
    except BaseException:
        if previous:
            os.rename(previous, directory)
        raise
    if previous:
        shutil.rmtree(previous, ignore_errors=True)


def _copy_to_gfile(staging, directory, gfile, overwrite):
    if overwrite and gfile.exists(directory):
        gfile.rmtree(directory)
    files = sorted(
        os.path.relpath(os.path.join(root, name), staging)
        for root, _, names in os.walk(staging)
        for name in names
    )
    files.sort(key=lambda path: path == CONFIG_FILE)  # config.json last
    copied = []
    try:
        for path in files:
            target = directory.rstrip("/") + "/" + path.replace(os.sep, "/")
            gfile.makedirs(os.path.dirname(target))
            gfile.copy(os.path.join(staging, path), target, overwrite=True)
            copied.append(target)
    except BaseException:
        for target in copied:
            gfile.remove(target)
        raise
