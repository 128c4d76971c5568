"""`keras-silc`: a thin command line over the library.

    keras-silc presets
    keras-silc train --preset silc_tiny --steps 40 --set head.num_prototypes=512

The backend comes from KERAS_BACKEND. Until the data pipeline lands, `train` runs
on `SilcModel.example_batch` data (random images and token ids): a smoke run that
shows the whole loop works (fit, checkpoint, reload, embed), not a benchmark.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _parse_value(text):
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


def build_model(preset, overrides):
    from keras_silc import SilcModel

    try:
        return SilcModel.from_preset(preset, **overrides)
    except TypeError as error:
        raise ValueError(f"Bad override for preset {preset!r}: {error}") from None


def _example_dataset(model, batch_size, steps, seed):
    import keras

    class ExampleBatches(keras.utils.PyDataset):
        def __len__(self):
            return steps

        def __getitem__(self, index):
            return model.example_batch(batch_size, seed=seed * 1_000_003 + index)

    return ExampleBatches()


def _in_batch_retrieval(model, batch):
    """Image-to-text recall@1 within one batch: a sanity check of the towers."""
    import numpy as np
    from keras import ops

    image = ops.convert_to_numpy(model.encode_image(batch["image"]))
    text = ops.convert_to_numpy(model.encode_text(batch["text"]))
    predictions = np.argmax(image @ text.T, axis=1)
    return float(np.mean(predictions == np.arange(len(image))))


def train(args):
    overrides = parse_overrides(args.set)
    os.makedirs(args.output, exist_ok=True)
    if not os.access(args.output, os.W_OK):
        raise ValueError(
            f"The output folder {args.output!r} is not writable; choose another --output."
        )

    import keras

    keras.utils.set_random_seed(args.seed)
    model = build_model(args.preset, overrides)
    recipe = {"warmup_steps": min(model.recipe["warmup_steps"], max(args.steps // 10, 1))}
    if model.recipe["cooldown_steps"]:
        recipe.update(total_steps=args.steps, cooldown_steps=max(args.steps // 10, 1))
    model.compile(**recipe)
    # The whole run cycles over a few fixed batches, so that the loss can fall.
    data = _example_dataset(model, args.batch_size, args.steps_per_epoch, args.seed)
    epochs = max(1, args.steps // args.steps_per_epoch)
    checkpoint = os.path.join(args.output, "model.keras")
    print(
        f"Training {args.preset} on {keras.backend.backend()} for {epochs * args.steps_per_epoch} "
        f"steps of {args.batch_size} (example data)."
    )
    start = time.time()
    history = model.fit(
        data,
        epochs=epochs,
        verbose=2 if args.quiet else 1,
        callbacks=[keras.callbacks.ModelCheckpoint(checkpoint), keras.callbacks.TerminateOnNaN()],
    )
    seconds = time.time() - start
    reloaded = keras.models.load_model(checkpoint)
    summary = {
        "preset": args.preset,
        "backend": keras.backend.backend(),
        "steps": epochs * args.steps_per_epoch,
        "seconds": round(seconds, 1),
        "first_loss": float(history.history["loss"][0]),
        "final_loss": float(history.history["loss"][-1]),
        "in_batch_recall_at_1": _in_batch_retrieval(reloaded, data[0]),
        "chance_recall_at_1": 1.0 / args.batch_size,
        "checkpoint": checkpoint,
    }
    with open(os.path.join(args.output, "summary.json"), "w") as f:
        json.dump({"summary": summary, "history": history.history}, f, indent=2, default=float)
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")
    return summary


def list_presets(args):
    from keras_silc import PRESETS

    for name, preset in PRESETS.items():
        print(f"{name:<10} {preset['description']}")


def make_parser():
    parser = argparse.ArgumentParser(
        prog="keras-silc",
        description="SILC training on JAX, TensorFlow or PyTorch (KERAS_BACKEND).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser("train", help="Train a preset (example data for now).")
    train_parser.add_argument("--preset", default="silc_tiny")
    train_parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a config entry, e.g. --set vision.depth=4 (repeatable).",
    )
    train_parser.add_argument("--steps", type=int, default=60)
    train_parser.add_argument("--steps-per-epoch", type=int, default=4)
    train_parser.add_argument("--batch-size", type=int, default=16)
    train_parser.add_argument("--seed", type=int, default=0)
    train_parser.add_argument("--output", default="runs/silc")
    train_parser.add_argument("--quiet", action="store_true", help="One log line per epoch.")
    train_parser.set_defaults(func=train)

    presets_parser = commands.add_parser("presets", help="List the model presets.")
    presets_parser.set_defaults(func=list_presets)
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as error:
        print(f"keras-silc: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
