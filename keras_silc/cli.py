"""`keras-silc`: a thin command line over the library.

    keras-silc demo                       # train on Fashion-MNIST scenes, evaluate, report
    keras-silc train --preset silc_tiny --steps 200 --set head.num_prototypes=512
    keras-silc train --data webdataset --data-path "shards/{00000..00099}.tar"
    keras-silc evaluate runs/demo/model.keras
    keras-silc presets

The backend comes from KERAS_BACKEND. `train` and `demo` checkpoint every
--checkpoint-every steps and resume from the newest checkpoint when run again with the
same command.
"""

import argparse
import json
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
    if not os.path.exists(path):
        raise ValueError(f"The config file {path!r} does not exist.")
    with open(path) as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"The config file {path!r} is not valid JSON: {error}") from None


def _tokenizer_for(args, captions, sequence_length):
    from keras_silc.data import SilcTokenizer

    if args.tokenizer:
        return SilcTokenizer.from_file(args.tokenizer, sequence_length)
    return SilcTokenizer.from_captions(
        captions, args.vocabulary_size, sequence_length, model_type="wordpiece"
    )


def train(args, demo_overrides=None):
    import keras

    from keras_silc import training
    from keras_silc.data import training_dataset
    from keras_silc.experiments import fashion as demo
    from keras_silc.models.presets import merge_config
    from keras_silc.models.presets import preset_config

    overrides = merge_config(demo_overrides or {}, _load_config_file(args.config))
    overrides = merge_config(overrides, parse_overrides(args.set))
    preset_config(args.preset)  # fails early on an unknown preset
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
        )
    )
    model.save(os.path.join(output, "model.keras"))
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
    except TypeError as error:
        raise ValueError(f"Bad override for preset {preset!r}: {error}") from None


def evaluate(args):
    import keras

    import keras_silc  # noqa: F401  (registers the classes for loading)
    from keras_silc.experiments import fashion as demo

    if not os.path.exists(args.model):
        raise ValueError(f"No saved model at {args.model!r}.")
    model = keras.models.load_model(args.model)
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


def run_demo(args):
    from keras_silc.experiments import fashion as demo

    args.preset = "silc_tiny"
    return train(args, demo_overrides=demo.DEMO_OVERRIDES)


def list_presets(args):
    from keras_silc import PRESETS

    for name, preset in PRESETS.items():
        print(f"{name:<10} {preset['description']}")


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
    parser.add_argument("--num-scenes", type=int, default=20_000, help="Fashion training scenes.")
    parser.add_argument(
        "--class-only-captions",
        type=float,
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
    parser.add_argument("--vocabulary-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--checkpoint-every", type=int, default=50, help="Steps per checkpoint.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=output)
    parser.add_argument("--eval-items", type=int, default=2000)
    parser.add_argument("--eval-scenes", type=int, default=500)
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
        "train", help="Train a preset; resumes from the newest checkpoint in --output."
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
        "evaluate", help="Zero-shot, few-shot, retrieval and segmentation of a saved model."
    )
    evaluate_parser.add_argument("model", help="A .keras file saved with a tokenizer.")
    evaluate_parser.add_argument("--output", help="Write report.json / report.md here.")
    evaluate_parser.add_argument("--eval-items", type=int, default=2000)
    evaluate_parser.add_argument("--eval-scenes", type=int, default=500)
    evaluate_parser.set_defaults(func=evaluate)

    presets_parser = commands.add_parser("presets", help="List the model presets.")
    presets_parser.set_defaults(func=list_presets)
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
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
