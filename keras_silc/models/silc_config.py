"""`SilcModel`'s arguments: their checks, defaults, the preprocessor's deserialisation and
the paper's optimisation recipe."""

import numbers
import warnings

import keras

from keras_silc.models.fine_tuning import ARGUMENTS as FINE_TUNING_ARGUMENTS
from keras_silc.models.fine_tuning import check_fine_tuning_arguments
from keras_silc.models.legacy import LEGACY_MESSAGE
from keras_silc.models.legacy import is_legacy_config
from keras_silc.models.presets import PREPROCESSOR_KEYS
from keras_silc.models.presets import merge_config
from keras_silc.models.presets import preprocessor_config
from keras_silc.optimizers import paper_optimizer

CONTRASTIVE_LOSSES = ("clip", "siglip")

DEFAULT_RECIPE = {
    "learning_rate": 1e-3,
    "warmup_steps": 50_000,
    "cooldown_steps": 50_000,
    "total_steps": None,
    "timescale": 10_000,
    "weight_decay": 1e-4,
    "beta_1": 0.9,
    "beta_2": 0.95,
    "global_clipnorm": 1.0,
}

# The constructor arguments that `get_config` records as the attribute of the same name.
SCALAR_ARGUMENTS = (
    "contrastive_loss",
    "multi_view_contrastive",
    "ema_teacher",
    "self_distillation",
    "distillation_weight",
    "student_temperature",
    "teacher_temperature",
    "warmup_teacher_temperature",
    "teacher_temperature_warmup_steps",
    "freeze_last_layer_steps",
    "teacher_momentum",
    "center_momentum",
    "logit_scale_init",
    "logit_bias_init",
    "max_logit_scale",
    "contrastive_chunk_size",
    "gradient_accumulation_steps",
    "inference_tower",
    "recipe",
    *FINE_TUNING_ARGUMENTS,
)


def _whole(value, minimum):
    return (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and int(value) == value
        and value >= minimum
    )


def check_arguments(arguments):
    """Raises ValueError naming the argument where `SilcModel`'s arguments disagree."""
    a = arguments
    if a["contrastive_loss"] not in CONTRASTIVE_LOSSES:
        raise ValueError(
            f"contrastive_loss must be one of {CONTRASTIVE_LOSSES}, got {a['contrastive_loss']!r}."
        )
    if a["self_distillation"] and not a["ema_teacher"]:
        raise ValueError("self_distillation=True needs the EMA teacher: set ema_teacher=True.")
    if a["inference_tower"] not in ("student", "teacher"):
        raise ValueError(
            f"inference_tower must be 'student' or 'teacher', got {a['inference_tower']!r}."
        )
    if a["inference_tower"] == "teacher" and not a["ema_teacher"]:
        raise ValueError("inference_tower='teacher' needs ema_teacher=True.")
    for name in ("student_temperature", "teacher_temperature"):
        if not (isinstance(a[name], numbers.Real) and 0 < a[name] < float("inf")):
            raise ValueError(f"{name} must be a positive number, got {a[name]!r}.")
    for name in ("logit_scale_init", "max_logit_scale"):
        value = a[name]
        if value is not None and not (isinstance(value, numbers.Real) and 0 < value < float("inf")):
            raise ValueError(
                f"{name} must be a positive number (t multiplies the cosine similarities and "
                f"is learned as log t), or None for the loss's default; got {value!r}."
            )
    steps, start = a["teacher_temperature_warmup_steps"], a["warmup_teacher_temperature"]
    if steps < 0 or (steps and not start) or (start is not None and not steps):
        raise ValueError(
            "A teacher-temperature warm-up needs teacher_temperature_warmup_steps > 0 and "
            f"warmup_teacher_temperature > 0 (the starting tau_t); got {steps!r} steps from "
            f"{start!r}. Set both, or neither for a constant teacher_temperature."
        )
    if not _whole(a["freeze_last_layer_steps"], 0):
        raise ValueError(
            "freeze_last_layer_steps must be a whole number of steps >= 0, got "
            f"{a['freeze_last_layer_steps']!r}."
        )
    chunk = a["contrastive_chunk_size"]
    if chunk is not None and chunk < 1:
        raise ValueError(f"contrastive_chunk_size must be a positive int or None, got {chunk!r}.")
    if not (_whole(a["gradient_accumulation_steps"], 1)):
        raise ValueError(
            "gradient_accumulation_steps must be a positive int, got "
            f"{a['gradient_accumulation_steps']!r}."
        )
    check_fine_tuning_arguments(a)


def constructor_arguments(config):
    """`SilcModel.from_config`'s config as constructor arguments: the view geometry
    (num_global_crops, num_local_crops, local_crop_size) and tokenizer of a preset-style
    config become the serialised preprocessor. A keras_silc 0.1 config is refused with the
    way to upgrade it."""
    if is_legacy_config(config):
        raise ValueError(LEGACY_MESSAGE)
    config = dict(config)
    geometry = {key: config.pop(key) for key in PREPROCESSOR_KEYS if key in config}
    tokenizer = config.pop("tokenizer", None)
    if config.get("preprocessor") is None and (geometry or tokenizer is not None):
        config["preprocessor"] = preprocessor_config(config, geometry, tokenizer)
    return config


def preprocessor_from(preprocessor):
    """The `preprocessor` argument as an object: a serialised one (from `get_config`) is
    rebuilt through the registry, so that a bad setting raises its own error."""
    if not isinstance(preprocessor, dict):
        return preprocessor
    registered = keras.saving.get_registered_object(preprocessor.get("registered_name"))
    if registered is not None:
        return registered.from_config(preprocessor["config"])
    return keras.saving.deserialize_keras_object(preprocessor)


def attach_preprocessor(preprocessor, text_encoder):
    """Tells `preprocessor` (if any) the text tower it tokenizes for, which checks that its
    tokenizer fits: vocabulary, length and end token."""
    if preprocessor is not None:
        preprocessor.attach_text_tower(
            text_encoder.vocabulary_size,
            text_encoder.max_length,
            text_encoder.eos_token_id if text_encoder.pooling == "eos" else None,
        )


def compile_optimizer(recipe, optimizer, compile_kwargs):
    """The optimizer for `SilcModel.compile`: `optimizer`, or the paper's from `recipe` with
    the recipe keys of `compile_kwargs` (removed from it) on top. Refuses a `loss`."""
    overrides = {k: compile_kwargs.pop(k) for k in list(compile_kwargs) if k in DEFAULT_RECIPE}
    if compile_kwargs.get("loss") is not None:
        raise ValueError("SilcModel computes its own losses; do not pass `loss` to compile().")
    if optimizer is None:
        return optimizer_from_recipe(recipe, overrides, stacklevel=4)
    if overrides:
        raise ValueError(
            f"{sorted(overrides)} configure the default optimizer; they cannot be "
            "combined with an explicit optimizer."
        )
    return optimizer


def optimizer_from_recipe(recipe, overrides, stacklevel=3):
    """The paper's optimizer for `recipe` with `overrides`; a schedule without
    `total_steps` loses its cool-down, with a warning."""
    recipe = merge_config(recipe, overrides)
    if recipe["cooldown_steps"] and not recipe["total_steps"]:
        warnings.warn(
            "No total_steps in the recipe, so the rsqrt schedule runs without its cool-down; "
            "pass compile(total_steps=...) for the paper's cool-down.",
            stacklevel=stacklevel,
        )
        recipe["cooldown_steps"] = 0
    return paper_optimizer(**recipe)


def prepare_optimizer(optimizer, trainable_variables):
    """Weight decay on weight matrices ("kernel" variables) only: not on biases, norms,
    embeddings, the MAP probe or the temperature. Warns about Keras's own gradient
    accumulation, which is another algorithm for SILC."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if getattr(inner, "gradient_accumulation_steps", None):
        warnings.warn(
            "The optimizer's gradient_accumulation_steps contrasts each fit batch only with "
            "itself and moves the EMA teacher and the center every batch. For the step of one "
            "large batch in micro-batches, build the model with "
            "SilcModel(..., gradient_accumulation_steps=M) instead.",
            stacklevel=3,
        )
    if not getattr(inner, "built", False) and getattr(inner, "weight_decay", None):
        inner.exclude_from_weight_decay(
            var_list=[v for v in trainable_variables if v.name != "kernel"]
        )


def metric_names(model):
    """The logs of a model's step: the losses, the temperature, and the collapse monitors
    of the distillation (`teacher_entropy`, `student_teacher_kl`)."""
    names = ["loss", "contrastive_loss", "temperature"]
    if model.contrastive_loss == "siglip":
        names.append("logit_bias")
    if model.self_distillation:
        names += ["distillation_loss", "teacher_entropy", "student_teacher_kl"]
        if model.teacher_temperature_warmup_steps:
            names.append("teacher_temperature")
    return names
