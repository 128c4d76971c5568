"""The settings `SilcModel` accepts (names, types, ranges), checked before anything is built:
one check for `--set`/`--config` on the command line and for `from_preset`'s overrides."""

import difflib
import inspect
import json
import math
import numbers

import keras

# Integer settings that may be 0; every other integer setting must be at least 1.
_MAY_BE_ZERO = {
    "num_local_crops",
    "warmup_steps",
    "cooldown_steps",
    "teacher_temperature_warmup_steps",
    "freeze_last_layer_steps",
    "pad_token_id",
    "eos_token_id",
    "unlocked_image_blocks",
    "unlocked_text_blocks",
}
# Integer settings that are at least 1 where set, with no default value to read a type off.
_POSITIVE_INTEGERS = {"num_prototypes", "mlp_dim", "output_dim", "contrastive_chunk_size"}
# Float settings that must be above 0 (a temperature of 0 divides by zero).
_POSITIVE_FLOATS = {
    "learning_rate",
    "student_temperature",
    "teacher_temperature",
    "logit_scale_init",
    "max_logit_scale",
}
# Float settings in [0, 1].
_FRACTIONS = {"teacher_momentum", "center_momentum", "beta_1", "beta_2", "momentum"}


def _defaults(cls):
    return {
        name: (None if p.default is inspect.Parameter.empty else p.default)
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD
    }


def setting_defaults(model_class=None):
    """{setting: default} of SilcModel's arguments (and those a subclass `model_class` adds),
    nested for vision/text/head/recipe."""
    from keras_silc.layers.distillation_head import DistillationHead
    from keras_silc.models.presets import PREPROCESSOR_KEYS
    from keras_silc.models.silc_config import DEFAULT_RECIPE
    from keras_silc.models.silc_model import SilcModel
    from keras_silc.models.text_encoder import TextEncoder
    from keras_silc.models.vision_encoder import VisionEncoder

    top = _defaults(SilcModel)
    if model_class is not None and model_class is not SilcModel:
        top.update(_defaults(model_class))
    top.pop("preprocessor")
    # The view geometry: preset keys that go to the model's preprocessor, read through Keras's
    # registry (`import keras_silc` registers it) so that models do not import data.
    preprocessor = keras.saving.get_registered_object("keras_silc>SilcPreprocessor")
    geometry = _defaults(preprocessor) if preprocessor else {}
    top.update({key: geometry.get(key, 0) for key in PREPROCESSOR_KEYS})
    top.update(
        vision=_defaults(VisionEncoder),
        text=_defaults(TextEncoder),
        head=_defaults(DistillationHead),
        recipe=dict(DEFAULT_RECIPE),
    )
    return top


def _check_value(where, key, value, default):
    """Raises ValueError naming `where` unless `value` suits the setting `key`."""
    name = key.rsplit(".", 1)[-1]

    def refuse(why):
        raise ValueError(f"{where} {key}={json.dumps(value, default=repr)}: {why}")

    if isinstance(default, dict) or isinstance(value, dict):
        if not (isinstance(default, dict) and isinstance(value, dict)):
            if isinstance(default, dict):
                example = next(iter(default))
                refuse(
                    f"{key!r} is a group of settings ({', '.join(sorted(default))}); set one "
                    f"of them, e.g. {key}.{example}=..."
                )
            refuse(f"{key!r} is a single value, not a group of settings.")
        return
    if value is None or default is None and name not in _MAY_BE_ZERO | _POSITIVE_INTEGERS:
        return  # optional settings, or no type to check against
    if isinstance(default, bool):
        if not isinstance(value, bool):
            refuse("must be true or false.")
        return
    if isinstance(default, int) or name in _MAY_BE_ZERO | _POSITIVE_INTEGERS:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            refuse("must be an integer.")
        minimum = 0 if name in _MAY_BE_ZERO else 1
        if value < minimum:
            refuse(f"must be at least {minimum}.")
        return
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            refuse("must be a number.")
        if not math.isfinite(value) or value < 0:
            refuse("must be a finite number >= 0.")
        if name in _POSITIVE_FLOATS and value <= 0:
            refuse("must be positive.")
        if name in _FRACTIONS and value > 1:
            refuse("must lie in [0, 1].")
        return
    if isinstance(default, str) and not isinstance(value, str):
        refuse("must be a string.")
    if isinstance(default, (tuple, list)) and not isinstance(value, (list, tuple)):
        refuse(f"must be a list like {json.dumps(list(default))}.")


def validate_overrides(overrides, where="--set", defaults=None, prefix="", model_class=None):
    """Checks every override against the settings of SilcModel (or its subclass
    `model_class`): names, types, ranges. The message starts with `where` (a flag, or the
    call that got the override) and names the setting, with the closest known name for a
    misspelt one."""
    defaults = setting_defaults(model_class) if defaults is None else defaults
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f" Did you mean {prefix + close[0]!r}?" if close else ""
            within = f"in {prefix[:-1]!r}" if prefix else "of the model"
            raise ValueError(
                f"{where} {path}: unknown setting {key!r} {within}.{hint} Known: "
                f"{', '.join(sorted(defaults))}."
            )
        _check_value(where, path, value, defaults[key])
        if isinstance(value, dict):
            validate_overrides(value, where, defaults[key], prefix=f"{path}.")
