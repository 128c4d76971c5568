"""`.keras` files of keras_silc 0.1, whose SilcModel held the tokenizer and the crop geometry
itself: `upgrade_model_file` rewrites one into today's layout (a `SilcPreprocessor`), once."""

import json
import os
import tempfile
import zipfile

from keras_silc.models.presets import PREPROCESSOR_KEYS
from keras_silc.models.presets import preprocessor_config

LEGACY_MESSAGE = (
    "This .keras file was written by keras_silc 0.1, whose SilcModel held its tokenizer and "
    "crop geometry itself (today a SilcPreprocessor holds them). Convert it once with "
    "keras_silc.models.upgrade_model_file(old_path, new_path), then load new_path."
)


def is_legacy_config(config):
    """A 0.1 SilcModel config that carries a tokenizer, whose vocabulary sits where the
    0.1 layout saved it."""
    return isinstance(config.get("tokenizer"), dict) and "preprocessor" not in config


def upgrade_model_file(source, target):
    """Writes `target`, a `.keras` file of `source`'s model in today's layout: the config's
    tokenizer and crop geometry become the model's preprocessor, and the tokenizer's
    vocabulary moves to the preprocessor's asset folder. Weights are copied unchanged."""
    try:
        with zipfile.ZipFile(source) as archive:
            entries = {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        raise ValueError(
            f"{source!r} is not a .keras file (a zip archive); pass the file model.save wrote."
        ) from None
    if "config.json" not in entries:
        raise ValueError(f"{source!r} has no config.json: it is not a .keras model file.")
    config = json.loads(entries["config.json"])
    model_config = config.get("config", {})
    if config.get("class_name") != "SilcModel" or not is_legacy_config(model_config):
        raise ValueError(f"{source!r} is not a keras_silc 0.1 SilcModel file with a tokenizer.")
    geometry = {key: model_config.pop(key) for key in PREPROCESSOR_KEYS if key in model_config}
    tokenizer = model_config.pop("tokenizer")
    model_config["preprocessor"] = preprocessor_config(model_config, geometry, tokenizer)
    entries["config.json"] = json.dumps(config).encode()
    old = f"assets/layers/{tokenizer['config']['name']}/"
    new = "assets/layers/silc_preprocessor/tokenizer/"
    renamed = {
        (new + name[len(old) :] if name.startswith(old) else name): data
        for name, data in entries.items()
    }
    folder = os.path.dirname(os.path.abspath(target))
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".keras", delete=False) as handle:
        with zipfile.ZipFile(handle, "w") as archive:
            for name, data in renamed.items():
                archive.writestr(name, data)
    os.replace(handle.name, target)
    return target
