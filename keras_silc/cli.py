"""`keras-silc`: a thin command line over the library.

    keras-silc demo                       # train on Fashion-MNIST scenes, evaluate, report
    keras-silc train --preset silc_tiny --steps 200 --set head.num_prototypes=512
    keras-silc train --data webdataset --data-path "shards/{00000..00099}.tar"
    keras-silc evaluate runs/demo/model.keras
    keras-silc evaluate model.keras --suite imagenet,coco --data-dir ~/data --output eval/
    keras-silc presets

The backend comes from KERAS_BACKEND. `train` and `demo` checkpoint every
--checkpoint-every steps and resume from the newest intact checkpoint when run again with
the same command (a checkpoint cut short by a kill is skipped with a warning).

What a resumed run may change: only the peak learning rate (--set
recipe.learning_rate=...), e.g. after the divergence guard stopped a run. The model, the
data, the batch size, the seed, the step count and the schedule's shape (warm-up, decay,
cool-down) stay those of the first run, and so does the optimizer's state; any other
change is refused as "a different run". A folder binds a run only once it holds a
checkpoint: a command that failed earlier (a typo in --set, a bad path) can be corrected
and run again in the same --output.
"""

import argparse
import json
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# Python's spellings, so that `--set head.batch_norm=False` is not the (true) string "False".
_PYTHON_LITERALS = {"True": True, "False": False, "None": None}


def _parse_value(text):
    """JSON (4, 0.5, true, null, [1, 2], {...}), Python's True/False/None, else the string."""
    if text.strip() in _PYTHON_LITERALS:
        return _PYTHON_LITERALS[text.strip()]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(pairs):
    """["vision.depth=4", "contrastive_loss=siglip"] -> nested dict."""
    overrides = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(
                f"Override {pair!r} is not KEY=VALUE; for example --set vision.depth=4 or "
                "--set contrastive_loss=siglip."
            )
        key, value = pair.split("=", 1)
        target = overrides
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = _parse_value(value)
    return overrides


def _load_config_file(path):
    if not path:
        return {}
    if not os.path.isfile(path):
        raise ValueError(f"--config: the file {path!r} does not exist.")
    with open(path) as handle:
        try:
            config = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"--config: {path!r} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(
            f"--config: {path!r} holds a JSON {type(config).__name__}; it must hold an object of "
            'overrides, e.g. {"vision": {"depth": 4}, "contrastive_loss": "siglip"}.'
        )
    return config


# Integer settings that may be 0; every other integer setting must be at least 1.
_MAY_BE_ZERO = {
    "num_local_crops",
    "warmup_steps",
    "cooldown_steps",
    "teacher_temperature_warmup_steps",
    "freeze_last_layer_steps",
    "pad_token_id",
    "eos_token_id",
}
# Float settings in [0, 1].
_FRACTIONS = {"teacher_momentum", "center_momentum", "beta_1", "beta_2", "momentum"}


def _setting_defaults():
    """{setting: default} of SilcModel's arguments, nested for vision/text/head/recipe."""
    import inspect

    from keras_silc.data.preprocessor import SilcPreprocessor
    from keras_silc.layers.distillation_head import DistillationHead
    from keras_silc.models.presets import PREPROCESSOR_KEYS
    from keras_silc.models.silc_config import DEFAULT_RECIPE
    from keras_silc.models.silc_model import SilcModel
    from keras_silc.models.text_encoder import TextEncoder
    from keras_silc.models.vision_encoder import VisionEncoder

    def defaults(cls):
        return {
            name: (None if p.default is inspect.Parameter.empty else p.default)
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD
        }

    top = defaults(SilcModel)
    top.pop("preprocessor")
    # The view geometry: preset keys that go to the model's preprocessor.
    geometry = defaults(SilcPreprocessor)
    top.update({key: geometry[key] for key in PREPROCESSOR_KEYS})
    top.update(
        vision=defaults(VisionEncoder),
        text=defaults(TextEncoder),
        head=defaults(DistillationHead),
        recipe=dict(DEFAULT_RECIPE),
    )
    return top


def _check_value(flag, key, value, default):
    """Raises ValueError naming `flag` unless `value` suits the setting `key`."""
    name = key.rsplit(".", 1)[-1]

    def refuse(why):
        raise ValueError(f"{flag} {key}={json.dumps(value)}: {why}")

    if isinstance(default, dict) or isinstance(value, dict):
        if not (isinstance(default, dict) and isinstance(value, dict)):
            if isinstance(default, dict):
                example = next(iter(default))
                refuse(
                    f"{key!r} is a group of settings ({', '.join(sorted(default))}); set one "
                    f"of them, e.g. --set {key}.{example}=..."
                )
            refuse(f"{key!r} is a single value, not a group of settings.")
        return
    if value is None or default is None and name not in _MAY_BE_ZERO:
        return  # optional settings, or no type to check against
    if isinstance(default, bool):
        if not isinstance(value, bool):
            refuse("must be true or false.")
        return
    if isinstance(default, int) or name in _MAY_BE_ZERO:
        if isinstance(value, bool) or not isinstance(value, int):
            refuse("must be an integer.")
        minimum = 0 if name in _MAY_BE_ZERO else 1
        if value < minimum:
            refuse(f"must be at least {minimum}.")
        return
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            refuse("must be a number.")
        if not math.isfinite(value) or value < 0:
            refuse("must be a finite number >= 0.")
        if name == "learning_rate" and value <= 0:
            refuse("must be positive.")
        if name in _FRACTIONS and value > 1:
            refuse("must lie in [0, 1].")
        return
    if isinstance(default, str) and not isinstance(value, str):
        refuse("must be a string.")
    if isinstance(default, (tuple, list)) and not isinstance(value, list):
        refuse(f"must be a list like {json.dumps(list(default))}.")


def validate_overrides(overrides, flag="--set", defaults=None, prefix=""):
    """Checks every override against SilcModel's settings (names, types, ranges) before
    anything is loaded or written; the message names `flag` and the setting."""
    import difflib

    defaults = _setting_defaults() if defaults is None else defaults
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f" Did you mean {prefix}{close[0]!r}?" if close else ""
            where = f"in {prefix[:-1]!r}" if prefix else "of the model"
            raise ValueError(
                f"{flag} {path}: unknown setting {key!r} {where}.{hint} Known: "
                f"{', '.join(sorted(defaults))}."
            )
        _check_value(flag, path, value, defaults[key])
        if isinstance(value, dict):
            validate_overrides(value, flag, defaults[key], prefix=f"{path}.")


def _tokenizer_for(args, captions, sequence_length):
    from keras_silc.data import SilcTokenizer

    if args.tokenizer:
        tokenizer = SilcTokenizer.from_file(args.tokenizer, sequence_length)
        flag = f"--tokenizer {args.tokenizer}"
    else:
        tokenizer = SilcTokenizer.from_captions(
            captions, args.vocabulary_size, sequence_length, model_type="wordpiece"
        )
        flag = f"--vocabulary-size {args.vocabulary_size}"
    unknown = tokenizer.unknown_fraction(captions[:512])
    if unknown >= 0.5:
        raise ValueError(
            f"{flag}: {unknown:.0%} of the training captions' tokens are unknown; the text "
            "tower would learn from padding. Use a larger vocabulary (or a tokenizer made "
            "for these captions)."
        )
    if unknown > 0.05:
        print(
            f"keras-silc: warning: {flag}: {unknown:.0%} of the training captions' tokens are "
            "unknown.",
            file=sys.stderr,
        )
    return tokenizer


def _check_training_arguments(args):
    """The flags' values, each refused with a message that names it."""
    if args.steps % min(args.checkpoint_every, args.steps):
        lower = args.steps - args.steps % args.checkpoint_every
        raise ValueError(
            f"--steps {args.steps} is not a multiple of --checkpoint-every "
            f"{args.checkpoint_every}: training runs whole checkpoint intervals, so it would "
            f"take {lower + args.checkpoint_every} steps. Use --steps {lower} or "
            f"{lower + args.checkpoint_every}, or another --checkpoint-every."
        )


def train(args, demo_overrides=None):
    import keras

    from keras_silc import training
    from keras_silc.data import training_dataset
    from keras_silc.experiments import fashion as demo
    from keras_silc.models.presets import merge_config
    from keras_silc.models.presets import preset_config

    preset_config(args.preset)  # fails early on an unknown preset
    _check_training_arguments(args)
    from_file = _load_config_file(args.config)
    validate_overrides(from_file, flag=f"--config {args.config}:")
    from_flags = parse_overrides(args.set)
    validate_overrides(from_flags)
    overrides = merge_config(demo_overrides or {}, from_file)
    overrides = merge_config(overrides, from_flags)
    output = args.output
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as error:
        raise ValueError(f"Cannot create the output folder {output!r}: {error}") from None
    if not os.access(output, os.W_OK):
        raise ValueError(f"The output folder {output!r} is not writable; choose another --output.")

    keras.utils.set_random_seed(args.seed)
    pairs, captions = demo.make_pairs(
        args.data,
        args.data_path,
        args.image_key,
        args.caption_key,
        args.num_scenes,
        args.seed,
        class_only_captions=args.class_only_captions,
    )
    text_length = merge_config(preset_config(args.preset), overrides)["text"]["max_length"]
    tokenizer = _tokenizer_for(args, captions, text_length)
    overrides = merge_config(
        {"text": {"vocabulary_size": max(tokenizer.vocabulary_size, 8)}}, overrides
    )
    steps_per_epoch = min(args.checkpoint_every, args.steps)
    overrides = merge_config({"recipe": demo.recipe_for(args.steps)}, overrides)
    run_config = {
        "preset": args.preset,
        "overrides": overrides,
        "data": args.data,
        "data_path": args.data_path,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "checkpoint_every": steps_per_epoch,
        "seed": args.seed,
        "class_only_captions": args.class_only_captions if args.data == "fashion_scenes" else None,
    }
    if args.photometric != "host":  # recorded only when set, so older runs still resume
        run_config["photometric"] = args.photometric

    def build_model():
        keras.utils.set_random_seed(args.seed)
        model = build_model_from(args.preset, overrides, tokenizer)
        model.compile()
        return model

    def build_dataset(start_example, model):
        augmentation = dict(demo.FASHION_AUGMENTATION) if args.data == "fashion_scenes" else {}
        augmentation["photometric"] = args.photometric
        return training_dataset(
            pairs,
            model.preprocessor,
            args.batch_size,
            augmentation=augmentation,
            seed=args.seed,
            start_example=start_example,
        )

    print(
        f"Training {args.preset} on {keras.backend.backend()} for {args.steps} steps of "
        f"{args.batch_size} on {args.data} (checkpoints every {steps_per_epoch} steps in "
        f"{output})."
    )
    (model, history, resumed), seconds = demo.timed(
        lambda: training.fit_with_checkpoints(
            build_model,
            training.DatasetBuilder(build_dataset, args.batch_size),
            total_steps=args.steps,
            steps_per_epoch=steps_per_epoch,
            output_dir=output,
            run_config=run_config,
            verbose=2 if args.quiet else "auto",
            learning_rate=overrides.get("recipe", {}).get("learning_rate"),
        )
    )
    training.save_model_atomically(model, os.path.join(output, "model.keras"))
    summary = {"steps": args.steps, "resumed_from_step": resumed * steps_per_epoch}
    if history:
        summary.update(first_loss=history["loss"][0], final_loss=history["loss"][-1])
    # The Fashion-MNIST evaluation measures a model trained on Fashion scenes; a model of
    # the user's data gets it only when asked.
    if args.skip_evaluation or (args.data != "fashion_scenes" and not args.fashion_evaluation):
        print(json.dumps(summary))
        return model, summary
    results = demo.evaluate_fashion(model, num_items=args.eval_items, num_scenes=args.eval_scenes)
    full_history = _read_history(output)
    demo.write_report(
        model,
        results,
        full_history,
        output,
        seconds=seconds,
        extra={"preset": args.preset, "backend": keras.backend.backend(), **summary},
    )
    print("\nEvaluation on the Fashion-MNIST test split (chance: zero-shot 0.10):")
    demo.print_table(results)
    print(f"\nReport: {os.path.join(output, 'report.md')}")
    return model, {**summary, **results}


def _read_history(output):
    import csv

    path = os.path.join(output, "history.csv")
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    history = {}
    for row in rows:
        for key, value in row.items():
            if key != "epoch":
                try:
                    history.setdefault(key, []).append(float(value))
                except (TypeError, ValueError):
                    pass
    return history


def build_model_from(preset, overrides, tokenizer=None):
    from keras_silc import SilcModel

    try:
        return SilcModel.from_preset(preset, tokenizer=tokenizer, **overrides)
    except (TypeError, ValueError, KeyError, ZeroDivisionError) as error:
        raise ValueError(
            f"Bad override (--set / --config) for preset {preset!r}: {error}"
        ) from None


def evaluate(args):
    if args.suite:
        return evaluate_suites(args)
    from keras_silc import training
    from keras_silc.experiments import fashion as demo

    if args.output:
        _check_evaluation_output(args.output)
    model = training.load_model_checked(args.model)
    if model.tokenizer is None:
        raise ValueError(
            f"{args.model!r} has no tokenizer: save the model with tokenizer= to evaluate it."
        )
    results = demo.evaluate_fashion(model, num_items=args.eval_items, num_scenes=args.eval_scenes)
    demo.print_table(results)
    if args.output:
        os.makedirs(args.output, exist_ok=True)
        demo.write_report(model, results, None, args.output, extra={"model": args.model})
    return results


# A converted checkpoint evaluated as it is: no teacher and a tiny distillation head (the
# towers are the checkpoint's; the head, new and untrained, is never used by the suites).
_EVALUATION_ONLY = {
    "ema_teacher": False,
    "self_distillation": False,
    "head": {"num_prototypes": 8, "hidden_dim": 8, "bottleneck_dim": 8},
}


def load_two_tower(source, tokenizer_file=None):
    """(model, tokenizer or None for the model's own) of `evaluate`'s MODEL: a .keras file, a
    Hugging Face SigLIP / CLIP folder (config.json and safetensors), or a keras-hub SigLIP /
    CLIP preset (a folder written by `save_to_preset`, or a preset name or handle, which
    keras-hub fetches as it always does). The tokenizer: `tokenizer_file` (a SentencePiece or
    WordPiece vocabulary), else the model's own, else the checkpoint's SentencePiece
    vocabulary (SigLIP's, with its padding)."""
    import glob

    from keras_silc import SilcModel
    from keras_silc import training

    source = os.fspath(source)
    vocabulary, family = None, None
    if os.path.isfile(source):
        model = training.load_model_checked(source)
    elif os.path.isdir(source) and glob.glob(os.path.join(source, "*.safetensors")):
        model = SilcModel.from_huggingface(source, **_EVALUATION_ONLY)
        with open(os.path.join(source, "config.json")) as handle:
            family = json.load(handle).get("model_type")
        vocabulary = os.path.join(source, "spiece.model")
    elif (
        os.path.isdir(source) or "://" in source or not (source.endswith(".keras") or "/" in source)
    ):
        model, vocabulary, family = _from_keras_hub_preset(source)
    else:
        raise ValueError(f"No saved model at {source!r}.")
    length = model.text_encoder.max_length
    if tokenizer_file:
        from keras_silc.data import SilcTokenizer

        siglip = family == "siglip" and tokenizer_file.endswith((".model", ".spm"))
        return model, SilcTokenizer.from_file(tokenizer_file, length, pad_with_end_token=siglip)
    if model.tokenizer is not None:
        return model, None
    return model, _checkpoint_tokenizer(source, vocabulary, family, length)


def _from_keras_hub_preset(preset):
    """(model, SigLIP tokenizer layer or None, family) of a keras-hub preset."""
    import keras_hub

    from keras_silc import SilcModel

    try:
        backbone = keras_hub.models.Backbone.from_preset(preset)
    except Exception as error:  # keras-hub raises many types for an unknown preset
        raise ValueError(
            f"MODEL {preset!r} is not a .keras file, a Hugging Face folder or a keras-hub "
            f"preset that loads ({type(error).__name__}: {error})."
        ) from None
    family = "siglip" if isinstance(backbone, keras_hub.models.SigLIPBackbone) else "clip"
    model = SilcModel.from_keras_hub(backbone, **_EVALUATION_ONLY)
    tokenizer = None
    if family == "siglip":
        try:
            tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(preset)
        except Exception:  # a preset saved without its tokenizer
            tokenizer = None
    return model, tokenizer, family


def _checkpoint_tokenizer(source, vocabulary, family, length):
    """A SilcTokenizer of a converted checkpoint's own SigLIP vocabulary, else an error."""
    from keras_silc.data import SilcTokenizer

    if family == "siglip" and isinstance(vocabulary, str) and os.path.isfile(vocabulary):
        return SilcTokenizer.from_file(vocabulary, length, pad_with_end_token=True)
    if family == "siglip" and vocabulary is not None and not isinstance(vocabulary, str):
        return SilcTokenizer(vocabulary, length, pad_with_end_token=True)
    why = (
        "CLIP's byte-pair tokenizer is not wrapped yet"
        if family == "clip"
        else "it carries no tokenizer"
    )
    raise ValueError(
        f"MODEL {source!r}: {why}; pass --tokenizer with the SentencePiece (.model / .spm) "
        "or WordPiece (.txt) vocabulary the text tower was trained with."
    )


def evaluate_suites(args):
    """`evaluate MODEL --suite ...`: the named benchmark suites, one report in --output."""
    import inspect

    from keras_silc import evaluation
    from keras_silc.evaluation import suites as registry
    from keras_silc.evaluation.suites import runner

    names = registry.parse_suites(args.suite)
    if not args.data_dir:
        raise ValueError("--suite needs --data-dir, the folder that holds the data sets.")
    if not args.output:
        raise ValueError("--suite needs --output, the folder for report.json and report.md.")
    _check_evaluation_output(args.output)
    options = {}
    for name in names:
        try:
            parameters = inspect.signature(registry.resolve(name)).parameters
        except NotImplementedError as error:
            raise ValueError(str(error)) from None
        chosen = {"resize": args.resize, "source": args.source}
        if name in registry.SEGMENTATION_SUITES:  # TCL's protocol fixes their resizing
            parameters = {k: v for k, v in parameters.items() if k != "resize"}
        options[name] = {k: v for k, v in chosen.items() if v is not None and k in parameters}
        ignored = [f"--{k}" for k, v in chosen.items() if v is not None and k not in parameters]
        if ignored:
            print(f"keras-silc: note: {name} takes no {', '.join(ignored)}.", file=sys.stderr)
    try:
        runner.locate_all(names, args.data_dir, options)  # a missing data set fails first
    except NotImplementedError as error:
        raise ValueError(str(error)) from None
    model, tokenizer = load_two_tower(args.model, args.tokenizer)
    report = evaluation.run_suites(
        model,
        names,
        args.data_dir,
        args.output,
        tokenizer=tokenizer,
        batch_size=args.batch_size,
        max_examples=args.max_examples,
        verbose=0 if args.quiet else 1,
        options=options,
        model_name=args.model,
    )
    print(f"\nReport: {os.path.join(args.output, 'report.md')}")
    return report


def _check_evaluation_output(output):
    """`evaluate --output` writes report.json / report.md: never into a training run's folder,
    whose report they would replace."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output!r} is a file, not a folder.")
    marks = [name for name in ("run_config.json", "checkpoints", "history.csv")]
    if any(os.path.exists(os.path.join(output, name)) for name in marks):
        raise ValueError(
            f"--output {output!r} is a training run's folder; evaluate would overwrite its "
            "report. Choose another folder, e.g. --output "
            f"{os.path.join(output, 'evaluation')!r}."
        )


def run_demo(args):
    from keras_silc.experiments import fashion as demo

    args.preset = "silc_tiny"
    return train(args, demo_overrides=demo.DEMO_OVERRIDES)


def list_presets(args):
    from keras_silc import PRESETS

    for name, preset in PRESETS.items():
        print(f"{name:<10} {preset['description']}")


def _at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 1]")
    return value


# Below this the WordPiece vocabulary holds little more than its special tokens.
MIN_VOCABULARY_SIZE = 16


def _add_training_arguments(parser, steps, batch_size, output, class_only_captions=0.0):
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a config entry, e.g. --set vision.depth=4 (repeatable).",
    )
    parser.add_argument("--config", help="A JSON file of overrides (applied before --set).")
    parser.add_argument(
        "--data",
        default="fashion_scenes",
        help="fashion_scenes (offline, default), webdataset, tfrecord, csv or tfds.",
    )
    parser.add_argument("--data-path", help="Shards, files, table or TFDS name of --data.")
    parser.add_argument("--image-key", help="Image field or column of --data.")
    parser.add_argument("--caption-key", help="Caption field or column of --data.")
    parser.add_argument(
        "--num-scenes", type=_at_least(1), default=20_000, help="Fashion training scenes."
    )
    parser.add_argument(
        "--class-only-captions",
        type=_fraction,
        default=class_only_captions,
        help="Fraction of Fashion scenes captioned with class names only (no colours or "
        f"positions, which are a shortcut for small models). Default {class_only_captions}.",
    )
    parser.add_argument(
        "--photometric",
        choices=("host", "accelerator"),
        default="host",
        help="Where the crops' colour jitter, blur and solarize run: in tf.data (host, "
        "default) or in the model's step on the GPU/TPU (accelerator: for a small host).",
    )
    parser.add_argument("--tokenizer", help="A SentencePiece .model or WordPiece .txt file.")
    parser.add_argument(
        "--vocabulary-size",
        type=_at_least(MIN_VOCABULARY_SIZE),
        default=512,
        help="WordPiece vocabulary trained on the captions (without --tokenizer).",
    )
    parser.add_argument("--steps", type=_at_least(1), default=steps)
    parser.add_argument("--batch-size", type=_at_least(1), default=batch_size)
    parser.add_argument(
        "--checkpoint-every",
        type=_at_least(1),
        default=50,
        help="Steps per checkpoint; --steps must be a multiple of it.",
    )
    parser.add_argument("--seed", type=_at_least(0), default=0)
    parser.add_argument("--output", default=output)
    parser.add_argument("--eval-items", type=_at_least(1), default=2000)
    parser.add_argument("--eval-scenes", type=_at_least(1), default=500)
    parser.add_argument("--skip-evaluation", action="store_true")
    parser.add_argument(
        "--fashion-evaluation",
        action="store_true",
        help="Evaluate on the Fashion-MNIST test split after training on other --data (the "
        "default only for fashion_scenes).",
    )
    parser.add_argument("--quiet", action="store_true", help="One log line per epoch.")


def make_parser():
    parser = argparse.ArgumentParser(
        prog="keras-silc",
        description="SILC training on JAX, TensorFlow or PyTorch (KERAS_BACKEND).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser(
        "train",
        help="Train a preset; resumes from the newest checkpoint in --output.",
        description="Trains a preset, checkpointing every --checkpoint-every steps. Run the "
        "same command again to resume from the newest intact checkpoint in --output. A resumed "
        "run may change only the peak learning rate (--set recipe.learning_rate=..., e.g. after "
        "a divergence); the model, data, batch size, seed, steps, the schedule's shape and the "
        "optimizer's state stay those of the first run.",
    )
    train_parser.add_argument("--preset", default="silc_tiny")
    _add_training_arguments(train_parser, 200, 32, "runs/silc")
    train_parser.set_defaults(func=train)

    demo_parser = commands.add_parser(
        "demo", help="Train a small SILC on Fashion-MNIST scenes, evaluate, write a report."
    )
    from keras_silc.experiments import fashion as demo

    _add_training_arguments(
        demo_parser,
        demo.DEMO_STEPS,
        demo.DEMO_BATCH,
        "runs/demo",
        class_only_captions=demo.DEMO_CLASS_ONLY_CAPTIONS,
    )
    demo_parser.set_defaults(func=run_demo)

    evaluate_parser = commands.add_parser(
        "evaluate",
        help="The paper's benchmarks (--suite) or the Fashion-MNIST evaluation of a model.",
        description="Without --suite: zero-shot, few-shot, retrieval and segmentation of a "
        "saved model on Fashion-MNIST. With --suite: the named benchmark suites (zero-shot "
        "ImageNet / CIFAR, COCO / Flickr30k retrieval, zero-shot segmentation) on the data sets "
        "in --data-dir, one report (report.json, report.md, pictures) in --output. Nothing is "
        "downloaded; a missing data set is an error that says where it was looked for.",
    )
    evaluate_parser.add_argument(
        "model",
        help="A .keras file; with --suite also a keras-hub SigLIP/CLIP preset (a name or a "
        "save_to_preset folder) or a Hugging Face SigLIP/CLIP folder.",
    )
    evaluate_parser.add_argument(
        "--output",
        help="Write report.json / report.md here (never into a training run's folder).",
    )
    evaluate_parser.add_argument("--eval-items", type=_at_least(1), default=2000)
    evaluate_parser.add_argument("--eval-scenes", type=_at_least(1), default=500)
    from keras_silc.evaluation.suites import SUITES

    evaluate_parser.add_argument(
        "--suite",
        metavar="NAME[,NAME...]",
        help=f"Benchmark suites: {', '.join(SUITES)} (docs/evaluation.md).",
    )
    evaluate_parser.add_argument("--data-dir", help="The folder that holds the data sets.")
    evaluate_parser.add_argument(
        "--batch-size",
        type=_at_least(1),
        help="Images per model call (default: 256; segmentation suites: 16 windows of 448 px).",
    )
    evaluate_parser.add_argument(
        "--max-examples",
        type=_at_least(1),
        help="Only the first N examples of each suite (a quick check, not the protocol).",
    )
    evaluate_parser.add_argument(
        "--tokenizer",
        help="A SentencePiece (.model/.spm) or WordPiece (.txt) vocabulary, instead of the "
        "model's own tokenizer (needed where it has none).",
    )
    evaluate_parser.add_argument(
        "--resize",
        choices=("squash", "center_crop"),
        help="Image resizing of the classification and retrieval suites: squash (big_vision, "
        "the default) or center_crop (CLIP / open_clip).",
    )
    evaluate_parser.add_argument(
        "--source",
        choices=("auto", "folder", "tfds"),
        help="Read the data from its folder layout or TFDS (default auto: the folder first).",
    )
    evaluate_parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    evaluate_parser.set_defaults(func=evaluate)

    presets_parser = commands.add_parser("presets", help="List the model presets.")
    presets_parser.set_defaults(func=list_presets)
    return parser


def main(argv=None):
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as exit:  # argparse has printed the flag's message
        return exit.code
    try:
        args.func(args)
    except (ValueError, OSError, KeyError) as error:
        print(f"keras-silc: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # TrainingDiverged and friends
        print(f"keras-silc: stopped: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
