"""`keras-silc train --init-from SOURCE`: which pretrained model SOURCE names, and loading it
through the library's own constructors.

SOURCE is one of three formats, told apart before any weight is read:

- "keras-hub": a keras-hub SigLIP or CLIP preset name (`siglip_base_patch16_224`,
  `clip_vit_base_patch16`: downloaded by keras-hub on first use), a `kaggle://` / `hf://`
  handle, or a folder written by keras-hub's `save_to_preset` -> `SilcModel.from_keras_hub`.
- "huggingface": a folder written by transformers' `save_pretrained` (`config.json` with a
  `model_type`, safetensors, and the tokenizer's files) -> `SilcModel.from_huggingface`.
- "keras-silc": a folder or handle written by `SilcModel.save_to_preset` -> `SilcModel.
  from_preset` (a SILC model whose training goes on: its head and teacher come along).

Every error names SOURCE and says what would load.
"""

import json
import os

FORMATS = ("keras-hub", "huggingface", "keras-silc")

_WHAT_LOADS = (
    "a keras-hub SigLIP or CLIP preset name (e.g. 'siglip_base_patch16_224'), a folder written "
    "by keras-hub's save_to_preset, a Hugging Face save_pretrained folder (config.json, "
    "model.safetensors and the tokenizer's files), or a folder written by "
    "SilcModel.save_to_preset"
)


def _error(source, message, kind=ValueError, flag="--init-from"):
    return kind(f"{flag} {source!r}: {message}")


def _keras_hub_names():
    """The names of keras-hub's SigLIP and CLIP presets."""
    import keras_hub

    models = keras_hub.models
    return sorted(set(models.SigLIPBackbone.presets) | set(models.CLIPBackbone.presets))


def _folder_format(source, flag):
    """The format of a local folder, by `interop.common.folder_kind`; where that tells
    nothing that loads, the error says what is wrong with the folder's config.json."""
    from keras_silc.interop.common import folder_kind

    kind = folder_kind(source)
    if kind == ("keras_silc", "SilcModel"):
        return "keras-silc"
    if kind is not None and kind[0] in ("huggingface", "keras-hub"):
        return kind[0]
    path = os.path.join(source, "config.json")
    if not os.path.isfile(path):
        found = sorted(os.listdir(source))[:10]
        raise _error(
            source,
            f"the folder has no config.json (it holds {found}). Pass {_WHAT_LOADS}.",
            FileNotFoundError,
            flag=flag,
        )
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _error(source, f"its config.json is not valid JSON ({error}).", flag=flag) from None
    if not isinstance(config, dict):
        raise _error(source, f"its config.json holds no object. Pass {_WHAT_LOADS}.", flag=flag)
    raise _error(
        source,
        f"its config.json describes no model that loads here (class "
        f"{config.get('class_name')!r}). Pass {_WHAT_LOADS}.",
        flag=flag,
    )


def describe(source, flag="--init-from"):
    """{"source", "format"} of an --init-from SOURCE (a folder by its absolute path), checked
    without loading any weights: a missing folder, a folder of another kind, a name that is
    neither a keras-hub SigLIP/CLIP preset nor a handle are refused here."""
    from keras_silc import PRESETS
    from keras_silc import preset_files

    if os.path.isdir(source):
        return {"source": os.path.abspath(source), "format": _folder_format(source, flag)}
    if os.path.exists(source):
        raise _error(
            source,
            f"is a file; --init-from takes a folder or a preset name: {_WHAT_LOADS}. (A "
            "model.keras of an earlier run: save it with model.save_to_preset(folder) and "
            "pass the folder.)",
            flag=flag,
        )
    if preset_files.is_handle(source):
        config = preset_files.read_json(source, preset_files.CONFIG_FILE)
        config = config if isinstance(config, dict) else {}
        if "model_type" in config:
            raise _error(
                source,
                "is a Hugging Face transformers checkpoint, which is read from a local folder: "
                "download it (huggingface-cli download REPO --local-dir FOLDER) and pass the "
                "folder.",
                flag=flag,
            )
        silc = config.get("registered_name") == "keras_silc>SilcModel"
        return {"source": source, "format": "keras-silc" if silc else "keras-hub"}
    if source in PRESETS:
        if "handle" in PRESETS[source]:
            return {"source": PRESETS[source]["handle"], "format": "keras-silc"}
        raise _error(
            source,
            "is a SilcModel architecture with random weights, not pretrained weights: train "
            f"it from scratch with --preset {source}, or pass {_WHAT_LOADS}.",
            flag=flag,
        )
    if "/" in source or os.sep in source or source.startswith("."):
        raise _error(source, f"no such folder. Pass {_WHAT_LOADS}.", FileNotFoundError, flag=flag)
    names = _keras_hub_names()
    if source not in names:
        raise _error(
            source,
            f"not a folder, and not one of keras-hub's SigLIP or CLIP presets "
            f"({', '.join(names)}). Pass {_WHAT_LOADS}.",
            flag=flag,
        )
    return {"source": source, "format": "keras-hub"}


def _huggingface_tokenizer_files(source, flag):
    """Raises FileNotFoundError naming the files when a Hugging Face folder has no tokenizer."""
    from keras_silc.interop import huggingface

    with open(os.path.join(source, "config.json"), encoding="utf-8") as handle:
        family = json.load(handle).get("model_type")
    options = {"siglip": [("spiece.model",)], "clip": [("vocab.json", "merges.txt")]}
    options["clip"].append(("tokenizer.json",))
    for files in options.get(family, []):
        if all(os.path.isfile(os.path.join(source, name)) for name in files):
            return
    if family in huggingface.FAMILIES:
        wanted = " or ".join(" and ".join(files) for files in options[family])
        raise _error(
            source,
            f"the {family} checkpoint has no tokenizer files ({wanted}). Save the "
            "checkpoint's tokenizer into the folder (processor.save_pretrained(folder), or "
            "copy them from its Hugging Face repository).",
            FileNotFoundError,
            flag=flag,
        )


def load(described, flag="--init-from", with_tokenizer=True, **overrides):
    """The `SilcModel` of a `describe`d source, with its own tokenizer (or, with
    `with_tokenizer=False`, with the one it has if any), `overrides` merged into its config.
    Errors name the source after `flag`, the argument that named it."""
    from keras_silc import SilcModel

    source, kind = described["source"], described["format"]
    try:
        if kind == "keras-hub":
            loadable = source
            if not with_tokenizer:  # a backbone object: no tokenizer files are needed
                from keras_silc.interop.keras_hub import load_backbone

                loadable = load_backbone(source)
            model = SilcModel.from_keras_hub(loadable, **overrides)
        elif kind == "huggingface":
            if with_tokenizer:
                _huggingface_tokenizer_files(source, flag)
            model = SilcModel.from_huggingface(source, **overrides)
        else:
            model = SilcModel.from_preset(source, **overrides)
    except (ValueError, FileNotFoundError) as error:
        message = str(error)
        if not message.startswith(flag):
            kind = FileNotFoundError if isinstance(error, FileNotFoundError) else ValueError
            raise _error(source, message, kind, flag=flag) from error
        raise
    except (KeyError, TypeError) as error:
        raise _error(
            source, f"could not be loaded ({type(error).__name__}: {error}).", flag=flag
        ) from error
    if with_tokenizer and model.tokenizer is None:
        raise _error(
            source,
            "the model comes without a tokenizer; save the preset with its tokenizer "
            "(SilcModel.save_to_preset of a model that has one).",
            flag=flag,
        )
    return model
