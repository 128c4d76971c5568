"""`keras-silc`: a thin command line over the library.

    keras-silc demo                       # train on Fashion-MNIST scenes, evaluate, report
    keras-silc train --preset silc_tiny --steps 200 --set head.num_prototypes=512
    keras-silc train --data webdataset --data-path "shards/{00000..00099}.tar" \
        --val-data "val/{00000..00003}.tar" --output gs://bucket/run
    keras-silc train --init-from siglip_base_patch16_224 --lock-text --data webdataset ...
    keras-silc evaluate runs/demo/model.keras
    keras-silc evaluate model.keras --suite imagenet,coco --data-dir ~/data --output eval/
    keras-silc presets

The backend comes from KERAS_BACKEND. `train` and `demo` checkpoint every
--checkpoint-every steps and resume from the newest intact checkpoint when run again with
the same command (a checkpoint cut short by a kill is skipped with a warning). Every output
(checkpoints, records, TensorBoard) goes through tf.io.gfile, so --output may be a bucket.

What a resumed run may change: the peak learning rate (--set recipe.learning_rate=...),
e.g. after the divergence guard stopped a run, and --steps upwards, which continues a
finished run to the new total on the schedule of a run of that length (see --steps). The
model, the data, the batch size, the seed and the schedule's shape (warm-up, decay,
cool-down) stay those of the first run, and so does the optimizer's state; any other change
is refused as "a different run". A folder binds a run only once it holds a checkpoint: a
command that failed earlier (a typo in --set, a bad path) can be corrected and run again in
the same --output. A flag that does not apply to the chosen --data or mode (`FLAG_RULES`) is
refused with the reason.

--init-from starts from pretrained weights (`keras_silc.experiments.pretrained`): the model
and its tokenizer are the pretrained one's, so the flags that choose an architecture or make a
tokenizer are refused with it. --lock-image / --lock-text / --unlocked-*-blocks /
--layer-decay are `SilcModel`'s fine-tuning arguments (`keras_silc.models.fine_tuning`).
"""

import argparse
import contextlib
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


def _tokenizer_for(args, captions, text_config, tower_fixed):
    """The run's tokenizer: `--tokenizer`'s file, else a WordPiece vocabulary trained on
    `captions`; refused when its vocabulary does not fit the text tower."""
    from keras_silc.data import SilcTokenizer

    tower = text_config["vocabulary_size"]
    where = "--set text.vocabulary_size" if tower_fixed else f"the preset {args.preset}"
    if args.tokenizer:
        tokenizer = SilcTokenizer.from_file(args.tokenizer, text_config["max_length"])
        flag = f"--tokenizer {args.tokenizer}"
    else:
        size = args.vocabulary_size or tower
        flag = f"--vocabulary-size {size}"
        if size > tower:
            raise ValueError(
                f"{flag} does not fit the text tower, which embeds {tower} tokens ({where}): "
                f"lower --vocabulary-size, or add --set text.vocabulary_size={size}."
            )
        tokenizer = SilcTokenizer.from_captions(
            captions, size, text_config["max_length"], model_type="wordpiece"
        )
    if tokenizer.vocabulary_size > tower:
        raise ValueError(
            f"{flag}: its vocabulary has {tokenizer.vocabulary_size} tokens, but the text "
            f"tower embeds {tower} ({where}). Add --set text.vocabulary_size="
            f"{tokenizer.vocabulary_size}, or use a tokenizer with at most {tower} tokens."
        )
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


# ------------------------------------------------------------- which flags apply where
def _flag_names(attributes):
    return ", ".join("--" + name.replace("_", "-") for name in attributes)


def _fashion(args):
    return args.data == "fashion_scenes"


def _fashion_evaluation_runs(args):
    return not args.skip_evaluation and (_fashion(args) or args.fashion_evaluation)


def _given(args, attribute):
    return getattr(args, attribute) not in (None, False)


# Flags that only some sources or modes use: (flag, attribute, applies(args), why not, with
# {data} for --data). A flag given where it does not apply is refused, never ignored.
_FASHION_EVALUATION = (
    "it sizes the Fashion-MNIST evaluation, which runs after training on fashion_scenes or "
    "with --fashion-evaluation, and not with --skip-evaluation"
)
_PRETRAINED_TOKENIZER = "--init-from brings the pretrained model's own tokenizer"


def _pretrained(args):
    return _given(args, "init_from")


def _unlocked_rule(tower):
    return (
        f"--unlocked-{tower}-blocks",
        f"unlocked_{tower}_blocks",
        lambda a: getattr(a, f"lock_{tower}"),
        f"without --lock-{tower} every block of the {tower} tower trains (to lock the {tower} "
        f"tower but for its last N blocks, add --lock-{tower})",
    )


FLAG_RULES = (
    (
        "--data-path",
        "data_path",
        lambda a: not _fashion(a),
        "--data fashion_scenes is made offline (--num-scenes sizes it)",
    ),
    ("--image-key", "image_key", lambda a: not _fashion(a), "--data fashion_scenes has no fields"),
    (
        "--caption-key",
        "caption_key",
        lambda a: not _fashion(a),
        "--data fashion_scenes has no fields",
    ),
    ("--num-scenes", "num_scenes", _fashion, "it sizes fashion_scenes, not --data {data}"),
    (
        "--class-only-captions",
        "class_only_captions",
        _fashion,
        "it captions fashion_scenes, not --data {data}",
    ),
    (
        "--fashion-evaluation",
        "fashion_evaluation",
        lambda a: not _fashion(a),
        "on --data fashion_scenes the Fashion-MNIST evaluation follows training anyway",
    ),
    (
        "--fashion-evaluation",
        "fashion_evaluation",
        lambda a: not a.skip_evaluation,
        "it asks for the evaluation that --skip-evaluation skips",
    ),
    (
        "--skip-evaluation",
        "skip_evaluation",
        lambda a: _fashion(a) or _given(a, "val_data") or a.fashion_evaluation,
        "no evaluation follows training on --data {data} without --val-data or "
        "--fashion-evaluation",
    ),
    ("--eval-items", "eval_items", _fashion_evaluation_runs, _FASHION_EVALUATION),
    ("--eval-scenes", "eval_scenes", _fashion_evaluation_runs, _FASHION_EVALUATION),
    (
        "--vocabulary-size",
        "vocabulary_size",
        lambda a: not a.tokenizer,
        "--tokenizer brings its own vocabulary",
    ),
    (
        "--tokenizer-sample",
        "tokenizer_sample",
        lambda a: not a.tokenizer,
        "--tokenizer brings its own vocabulary",
    ),
    (
        "--val-data",
        "val_data",
        lambda a: not _fashion(a),
        "on --data fashion_scenes the Fashion-MNIST evaluation follows training; --val-data "
        "holds validation pairs of your own --data",
    ),
    (
        "--val-size",
        "val_size",
        lambda a: _given(a, "val_data"),
        "it sizes --val-data, which is not given",
    ),
    (
        "--eval-every",
        "eval_every",
        lambda a: _given(a, "val_data"),
        "it times the --val-data evaluation, and --val-data is not given",
    ),
    (
        "--val-class-names",
        "val_class_names",
        lambda a: _given(a, "val_data"),
        "zero-shot classification runs on --val-data, which is not given",
    ),
    (
        "--val-label-key",
        "val_label_key",
        lambda a: _given(a, "val_class_names"),
        "it gives each --val-data image's class among --val-class-names, which is not given",
    ),
    (
        "--preset",
        "preset",
        lambda a: not _pretrained(a),
        "--init-from brings the architecture with the weights",
    ),
    ("--tokenizer", "tokenizer", lambda a: not _pretrained(a), _PRETRAINED_TOKENIZER),
    ("--vocabulary-size", "vocabulary_size", lambda a: not _pretrained(a), _PRETRAINED_TOKENIZER),
    (
        "--tokenizer-sample",
        "tokenizer_sample",
        lambda a: not _pretrained(a),
        _PRETRAINED_TOKENIZER,
    ),
    _unlocked_rule("image"),
    _unlocked_rule("text"),
)


def check_flags_apply(args):
    """Refuses, with its reason, every flag of `FLAG_RULES` given where it does not apply."""
    for flag, attribute, applies, reason in FLAG_RULES:
        if _given(args, attribute) and not applies(args):
            raise ValueError(
                f"{flag} does not apply: {reason.format(data=args.data)}. Leave it out."
            )


def _check_training_arguments(args):
    """The flags' values, each refused with a message that names it; then the defaults of
    the flags left out (`args.given` keeps which were given)."""
    args.given = {attribute for _, attribute, _, _ in FLAG_RULES if _given(args, attribute)}
    check_flags_apply(args)
    if not _fashion(args) and args.data_path is None:
        raise ValueError(
            f"--data {args.data} needs --data-path (its shards, files, table or TFDS name)."
        )
    for attribute, value in args.defaults.items():
        if getattr(args, attribute) is None:
            setattr(args, attribute, value)
    if args.preset is None and not _pretrained(args):
        args.preset = DEFAULT_PRESET
    if args.eval_every is None:
        args.eval_every = min(args.checkpoint_every, args.steps)
    if args.steps % min(args.checkpoint_every, args.steps):
        lower = args.steps - args.steps % args.checkpoint_every
        raise ValueError(
            f"--steps {args.steps} is not a multiple of --checkpoint-every "
            f"{args.checkpoint_every}: training runs whole checkpoint intervals, so it would "
            f"take {lower + args.checkpoint_every} steps. Use --steps {lower} or "
            f"{lower + args.checkpoint_every}, or another --checkpoint-every."
        )


def _checkpoint_interval(args, saved):
    """Steps per checkpoint: --checkpoint-every, or --steps when shorter. A run continued for
    more steps keeps its interval: a first run shorter than --checkpoint-every had one of its
    --steps (`saved` is its run config, or None)."""
    interval = min(args.checkpoint_every, args.steps)
    first = (saved or {}).get("checkpoint_every")
    if (
        isinstance(first, int)
        and first != interval
        and first == saved.get("steps")
        and first < min(args.checkpoint_every, args.steps)
    ):
        if args.steps % first:
            raise ValueError(
                f"--steps {args.steps} continues a run of {first} steps, which checkpointed "
                f"every {first} steps: use a multiple of {first}, e.g. --steps "
                f"{args.steps + first - args.steps % first}."
            )
        interval = first
    return interval


def _prepare_output(output):
    from keras_silc import storage

    try:
        storage.makedirs(output)
    except Exception as error:  # OSError locally, tf.errors elsewhere
        raise ValueError(f"Cannot create the output folder {output!r}: {error}") from None
    if storage.is_local(output) and not os.access(output, os.W_OK):
        raise ValueError(f"The output folder {output!r} is not writable; choose another --output.")


@contextlib.contextmanager
def _errors_name_the_flag(flag):
    """Prefixes `flag` to a data error's message that does not name a flag already."""
    try:
        yield
    except (ValueError, OSError, KeyError) as error:
        message = str(error.args[0] if isinstance(error, KeyError) and error.args else error)
        if message.startswith("--"):
            raise
        raise ValueError(f"{flag}: {message}") from error


def _validation(args, image_size):
    """(arrays, class names or None, labels or None) of --val-data, read before training."""
    from keras_silc.experiments import own_data

    tfds = args.data == "tfds"
    arrays = own_data.load_validation(
        args.data,
        args.data_path if tfds else args.val_data,
        image_size,
        args.val_size,
        image_key=args.image_key,
        caption_key=args.caption_key,
        label_key=args.val_label_key,
        split=args.val_data if tfds else None,
        seed=args.seed,
    )
    if not args.val_class_names:
        return arrays, None, None
    names = own_data.read_class_names(args.val_class_names)
    return arrays, names, own_data.class_indices(arrays, names, args.val_label_key)


def _tokenizer_record(args):
    """The tokenizer flags given, for run_config.json (none: nothing recorded, as older
    runs recorded nothing)."""
    record = {}
    if args.tokenizer:
        record["file"] = os.path.abspath(args.tokenizer)
    for attribute in ("vocabulary_size", "tokenizer_sample"):
        if attribute in args.given:
            record[attribute] = getattr(args, attribute)
    return record


# ------------------------------------------------------ pretrained weights, fine-tuning
# The fine-tuning flags, by the SilcModel argument they set (`models.fine_tuning.ARGUMENTS`).
# The peak learning rate of an --init-from run unless --set recipe.learning_rate=... says
# otherwise; the recipe's 1e-3 is for towers trained from scratch.
FINE_TUNING_LEARNING_RATE = 1e-5
FINE_TUNING_FLAGS = {
    "lock_image": "--lock-image",
    "lock_text": "--lock-text",
    "unlocked_image_blocks": "--unlocked-image-blocks",
    "unlocked_text_blocks": "--unlocked-text-blocks",
    "layer_decay": "--layer-decay",
}
# The settings of a pretrained tower that --set may change: the rest are the checkpoint's.
_PRETRAINED_TOWER_SETTINGS = ("remat",)


def _no_fine_tuning():
    """SilcModel's fine-tuning defaults: nothing locked, one learning rate."""
    import inspect

    from keras_silc import SilcModel

    parameters = inspect.signature(SilcModel.__init__).parameters
    return {key: parameters[key].default for key in FINE_TUNING_FLAGS}


def _with_fine_tuning_flags(args, overrides):
    """`overrides` with the fine-tuning flags given; a flag and a --set / --config entry
    that disagree are refused."""
    flags = {}
    for key, flag in FINE_TUNING_FLAGS.items():
        value = getattr(args, key)
        if value in (None, False):
            continue
        if key in overrides and overrides[key] != value:
            raise ValueError(
                f"{flag} and --set / --config {key}={json.dumps(overrides[key])} disagree; "
                "give the setting once."
            )
        flags[key] = value
    return {**overrides, **flags}


def _check_fine_tuning(overrides, depths, self_distillation, where):
    """Refuses, naming the flag, fine-tuning settings that the towers (`depths`: {tower:
    blocks} of `where`) or the objective cannot take; then the library's own checks."""
    from keras_silc.models.fine_tuning import check_fine_tuning_arguments

    settings = _no_fine_tuning()
    settings.update({k: v for k, v in overrides.items() if k in settings})
    for tower, depth in depths.items():
        count = settings[f"unlocked_{tower}_blocks"]
        if isinstance(count, int) and count > depth:
            raise ValueError(
                f"--unlocked-{tower}-blocks {count}: the {tower} tower of {where} has {depth} "
                f"block{'s' * (depth != 1)}; use a number from 0 (the whole tower locked) to "
                f"{depth}."
            )
    if settings["lock_image"] and self_distillation and not settings["unlocked_image_blocks"]:
        raise ValueError(
            "--lock-image freezes the whole image tower, so SILC's self-distillation could only "
            "train its new head over frozen features. Add --unlocked-image-blocks N to "
            "fine-tune the tower's last N blocks with SILC or, for LiT (the text tower learns "
            "to read a locked image tower), --set self_distillation=false --set "
            "ema_teacher=false."
        )
    try:
        check_fine_tuning_arguments({**settings, "self_distillation": self_distillation})
    except ValueError as error:
        raise ValueError(f"--set / --config: {error}") from None
    return settings


def _warn_random_locks(overrides):
    for tower in ("image", "text"):
        if overrides.get(f"lock_{tower}"):
            print(
                f"keras-silc: warning: --lock-{tower} without --init-from freezes a randomly "
                f"initialised {tower} tower: its locked blocks never learn. Start from "
                "pretrained weights with --init-from, unless this is what you want (a "
                "random-feature baseline).",
                file=sys.stderr,
            )


def _check_pretrained_overrides(overrides):
    """Refuses --set / --config entries that would change a pretrained tower."""
    for group, tower in (("vision", "image"), ("text", "text")):
        for key in overrides.get(group, {}):
            if key not in _PRETRAINED_TOWER_SETTINGS:
                allowed = ", ".join(f"{group}.{k}" for k in _PRETRAINED_TOWER_SETTINGS)
                raise ValueError(
                    f"--set / --config {group}.{key}: with --init-from the {tower} tower is the "
                    f"pretrained model's, {key} included; only {allowed} may be set. Leave it "
                    "out, or train from scratch with --preset."
                )


def _no_checkpoint(output):
    from keras_silc import storage
    from keras_silc import training

    return training.latest_checkpoint(storage.join(output, "checkpoints"))[0] is None


def _resumed_start(output, source):
    """The saved `init_from` record of the run in `output` when it holds checkpoints and
    started from `source` (a folder by its absolute path), else None. Then the run resumes
    from its checkpoint: the source is not read again, nor downloaded."""
    from keras_silc import storage
    from keras_silc import training

    saved = training.read_run_config(output)
    path, _ = training.latest_checkpoint(storage.join(output, "checkpoints"))
    start = (saved or {}).get("init_from")
    if path is None or not isinstance(start, dict):
        return None
    source = os.path.abspath(source) if os.path.isdir(source) else source
    return start if start.get("source") == source else None


def _load_pretrained(described, overrides, seed):
    """The pretrained model, fine-tuning settings applied: built unlocked, then locked
    (`configure_fine_tuning`) once the settings are checked against its towers."""
    import keras

    from keras_silc.experiments import pretrained

    keras.utils.set_random_seed(seed)  # the new distillation head
    others = {k: v for k, v in overrides.items() if k not in FINE_TUNING_FLAGS}
    model = pretrained.load(described, **others, **_no_fine_tuning())
    depths = {tower: len(model.tower_encoder(tower).blocks) for tower in ("image", "text")}
    checked = _check_fine_tuning(
        overrides, depths, model.self_distillation, f"--init-from {described['source']!r}"
    )
    model.configure_fine_tuning(**checked)
    return model


def train(args, demo_overrides=None):
    import keras

    from keras_silc import evaluation
    from keras_silc import storage
    from keras_silc import training
    from keras_silc.data import DataStats
    from keras_silc.data import DataStatsCallback
    from keras_silc.data import training_dataset
    from keras_silc.experiments import fashion as demo
    from keras_silc.experiments import own_data
    from keras_silc.experiments import pretrained
    from keras_silc.models.presets import merge_config
    from keras_silc.models.presets import preset_config
    from keras_silc.models.settings import validate_overrides

    _check_training_arguments(args)
    if args.preset is not None:
        preset_config(args.preset)  # fails early on an unknown preset
    from_file = _load_config_file(args.config)
    validate_overrides(from_file, where=f"--config {args.config}:")
    from_flags = parse_overrides(args.set)
    validate_overrides(from_flags)
    overrides = merge_config(demo_overrides or {}, from_file)
    overrides = merge_config(overrides, from_flags)
    overrides = _with_fine_tuning_flags(args, overrides)
    overrides = merge_config({"recipe": demo.recipe_for(args.steps)}, overrides)
    if _pretrained(args):
        recipe = {"learning_rate": FINE_TUNING_LEARNING_RATE}
        overrides = merge_config({"recipe": recipe}, overrides)
    output = args.output

    # The model's source, checked (and, for a new run, loaded) before anything is written.
    start, loaded = None, []
    if _pretrained(args):
        _check_pretrained_overrides(overrides)
        start = _resumed_start(output, args.init_from)
        if start is None:
            start = pretrained.describe(args.init_from)
            loaded.append(_load_pretrained(start, overrides, args.seed))
            start["image_size"] = loaded[0].vision_config["image_size"]
        image_size = start["image_size"]
    else:
        config = merge_config(preset_config(args.preset), overrides)
        depths = {"image": config["vision"]["depth"], "text": config["text"]["depth"]}
        self_distillation = config.get("self_distillation", True)
        _check_fine_tuning(overrides, depths, self_distillation, f"the preset {args.preset}")
        _warn_random_locks(overrides)
        image_size = config["vision"]["image_size"]

    keras.utils.set_random_seed(args.seed)
    with _errors_name_the_flag("--data-path" if args.data_path else "--data"):
        pairs, captions = demo.make_pairs(
            args.data,
            args.data_path,
            args.image_key,
            args.caption_key,
            args.num_scenes,
            args.seed,
            class_only_captions=args.class_only_captions,
            tokenizer_sample=args.tokenizer_sample,
        )
    tokenizer = None  # a pretrained model's is its own
    if not _pretrained(args):
        tower_fixed = "vocabulary_size" in overrides.get("text", {})
        tokenizer = _tokenizer_for(args, captions, config["text"], tower_fixed)
        if not tower_fixed:  # the tower embeds the vocabulary, no rows that no token uses
            overrides = merge_config(
                {"text": {"vocabulary_size": max(tokenizer.vocabulary_size, 8)}}, overrides
            )
    validation = None
    if args.val_data:
        with _errors_name_the_flag("--val-data"):
            validation = _validation(args, image_size)
    fresh = _no_checkpoint(output)
    if start is None and fresh:
        # A fresh run's model is built now, so that a setting the model refuses (e.g.
        # vision.width=33 for 2 heads) leaves no folder behind.
        keras.utils.set_random_seed(args.seed)
        loaded.append(build_model_from(args.preset, overrides, tokenizer))
    # Created only once every input has been read: a refused command leaves nothing behind.
    _prepare_output(output)
    saved = training.read_run_config(output)
    steps_per_epoch = _checkpoint_interval(args, saved)
    interval = (saved or {}).get("checkpoint_every")
    if isinstance(interval, int) and interval != steps_per_epoch and not fresh:
        # Checked here: the library would count the checkpoints in the new interval.
        raise ValueError(
            f"{output!r} holds a run that checkpoints every {interval} steps; resume it with "
            f"--checkpoint-every {interval}, or choose a new --output."
        )
    run_config = {
        "preset": args.preset,
        "overrides": overrides,
        "data": args.data,
        "data_path": args.data_path,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "checkpoint_every": steps_per_epoch,
        "seed": args.seed,
        "class_only_captions": args.class_only_captions if _fashion(args) else None,
    }
    # Recorded only when set, so that older runs still resume.
    if args.photometric != "host":
        run_config["photometric"] = args.photometric
    if _tokenizer_record(args):
        run_config["tokenizer"] = _tokenizer_record(args)
    if start is not None:
        run_config["init_from"] = start

    def build_model():
        if loaded:  # built or loaded above
            model = loaded.pop()
        elif start is not None:  # again, when no checkpoint loads after all
            model = _load_pretrained(start, overrides, args.seed)
        else:
            keras.utils.set_random_seed(args.seed)
            model = build_model_from(args.preset, overrides, tokenizer)
        model.compile()
        return model

    # Skipped records (undecodable images, empty captions, truncated shards) are warned
    # about as they grow, logged per epoch and counted in the summary.
    data_stats = DataStatsCallback(DataStats())  # the dataset's own, once it is built

    def build_dataset(start_example, model):
        augmentation = dict(demo.FASHION_AUGMENTATION) if _fashion(args) else {}
        augmentation["photometric"] = args.photometric
        dataset = training_dataset(
            pairs,
            model.preprocessor,
            args.batch_size,
            augmentation=augmentation,
            seed=args.seed,
            start_example=start_example,
        )
        data_stats.stats = dataset.stats
        return dataset

    callbacks = [data_stats]
    records = storage.join(output, "validation.csv")
    if validation is not None:
        arrays, class_names, labels = validation
        callbacks.append(
            evaluation.EvaluationCallback(
                own_data.validation_evaluations(arrays, class_names, labels),
                every_n_steps=args.eval_every,
                log_dir=storage.join(output, "tensorboard", "validation"),
                prefix="",
                records=records,
                at_train_end=not args.skip_evaluation,
                update_logs=False,
            )
        )
    name = args.preset if start is None else f"from {start['source']}"
    print(
        f"Training {name} on {keras.backend.backend()} for {args.steps} steps of "
        f"{args.batch_size} on {args.data} (checkpoints every {steps_per_epoch} steps in "
        f"{output})."
    )
    schedule = {key: overrides["recipe"][key] for key in training.SCHEDULE_STEPS}
    (model, history, resumed), seconds = demo.timed(
        lambda: training.fit_with_checkpoints(
            build_model,
            training.DatasetBuilder(build_dataset, args.batch_size),
            total_steps=args.steps,
            steps_per_epoch=steps_per_epoch,
            output_dir=output,
            run_config=run_config,
            callbacks=callbacks,
            verbose=2 if args.quiet else "auto",
            learning_rate=overrides.get("recipe", {}).get("learning_rate"),
            schedule=schedule,
            log_every=args.log_every,
        )
    )
    training.save_model_atomically(model, storage.join(output, "model.keras"))
    summary = {"steps": args.steps, "resumed_from_step": resumed * steps_per_epoch}
    if history:
        summary.update(first_loss=history["loss"][0], final_loss=history["loss"][-1])
    if data_stats.stats is not None:
        summary["skipped_data"] = data_stats.stats.skipped()
    if validation is not None and storage.exists(records):
        rows = _read_csv(records)
        if rows:
            last = rows[-1]
            summary["validation"] = {
                k: int(v) if k == "step" else float(v) for k, v in last.items()
            }
    # The Fashion-MNIST evaluation measures a model trained on Fashion scenes; a model of
    # the user's data gets it only when asked.
    if not _fashion_evaluation_runs(args):
        print(json.dumps(summary))
        return model, summary
    results = demo.evaluate_fashion(model, num_items=args.eval_items, num_scenes=args.eval_scenes)
    full_history = _read_history(output)
    with storage.local_folder(output) as folder:
        demo.write_report(
            model,
            results,
            full_history,
            folder,
            seconds=seconds,
            extra={"preset": name, "backend": keras.backend.backend(), **summary},
        )
    print("\nEvaluation on the Fashion-MNIST test split (chance: zero-shot 0.10):")
    demo.print_table(results)
    print(f"\nReport: {storage.join(output, 'report.md')}")
    return model, {**summary, **results}


def _read_csv(path):
    import csv
    import io

    from keras_silc import storage

    return list(csv.DictReader(io.StringIO(storage.read_text(path), newline="")))


def _read_history(output):
    from keras_silc import storage

    path = storage.join(output, "history.csv")
    if not storage.exists(path):
        return {}
    history = {}
    for row in _read_csv(path):
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


# `evaluate` flags that act only on the benchmark suites, and the Fashion evaluation's own.
_SUITE_ONLY_FLAGS = ("data_dir", "batch_size", "max_examples", "tokenizer", "resize", "source")
_FASHION_ONLY_FLAGS = {"eval_items": 2000, "eval_scenes": 500}


def evaluate(args):
    if args.suite is not None:
        if not args.suite.strip():
            raise ValueError("--suite is empty: name one or more suites, e.g. --suite imagenet.")
        ignored = [
            name for name, default in _FASHION_ONLY_FLAGS.items() if getattr(args, name) != default
        ]
        if ignored:
            raise ValueError(
                f"{_flag_names(ignored)} set the Fashion-MNIST evaluation (without --suite); "
                "with --suite use --max-examples."
            )
        return evaluate_suites(args)
    given = [name for name in _SUITE_ONLY_FLAGS if getattr(args, name) is not None]
    if given:
        raise ValueError(
            f"{_flag_names(given)} act only with --suite (the paper's benchmarks); without it "
            "keras-silc evaluate runs the Fashion-MNIST evaluation. Add --suite NAME or drop them."
        )
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
    """(model, tokenizer or None for the model's own) of `evaluate`'s MODEL: a .keras file,
    or any SOURCE that `train --init-from` takes (a keras-hub SigLIP / CLIP preset name, handle
    or folder; a Hugging Face folder; a `SilcModel.save_to_preset` folder), with its own
    tokenizer. `tokenizer_file`, a SentencePiece (.model / .spm) or WordPiece (.txt)
    vocabulary, replaces it."""
    from keras_silc import training
    from keras_silc.experiments import pretrained

    source = os.fspath(source)
    converted = False  # a keras-hub or Hugging Face checkpoint
    if os.path.isfile(source):
        model = training.load_model_checked(source)
    elif source.endswith(".keras"):
        raise ValueError(f"No saved model at {source!r}.")
    else:
        described = pretrained.describe(source, flag="MODEL")
        converted = described["format"] != "keras-silc"
        overrides = _EVALUATION_ONLY if converted else {}
        model = pretrained.load(
            described, flag="MODEL", with_tokenizer=not tokenizer_file, **overrides
        )
    if tokenizer_file:
        from keras_silc.data import SilcTokenizer

        # SigLIP's text tower was trained on SentencePiece ids padded with the end token.
        siglip = (
            converted
            and model.contrastive_loss == "sigmoid"
            and tokenizer_file.endswith((".model", ".spm"))
        )
        length = model.text_encoder.max_length
        return model, SilcTokenizer.from_file(tokenizer_file, length, pad_with_end_token=siglip)
    if model.tokenizer is None:
        raise ValueError(
            f"MODEL {source!r} carries no tokenizer; pass --tokenizer with the SentencePiece "
            "(.model / .spm) or WordPiece (.txt) vocabulary the text tower was trained with."
        )
    return model, None


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


def _at_least(minimum, why=""):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}{why}")
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


def _layer_decay(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"{value} is not in (0, 1]: block i of L learns at lr * F ** (L - i), so use e.g. "
            "0.75 (1 is one learning rate for all)"
        )
    return value


DEFAULT_PRESET = "silc_tiny"
# Below this the WordPiece vocabulary holds little more than its special tokens.
MIN_VOCABULARY_SIZE = 16

STEPS_HELP = (
    "Total optimizer steps; a multiple of --checkpoint-every. Run again with a larger --steps "
    "on a finished (or interrupted) run's --output to continue it to the new total: the "
    "schedule is stretched, not appended to. From the checkpoint's step on, the learning "
    "rate follows the schedule of a run of the new --steps (warm-up over its first 10%%, "
    "rsqrt decay, cool-down over its last 20%%), so it rises again from the end of the first "
    "run's cool-down; the optimizer's moments carry on. --steps never goes below a "
    "checkpoint's step."
)


def _add_training_arguments(parser, steps, batch_size, output, class_only_captions=0.0):
    from keras_silc.experiments.own_data import SOURCES
    from keras_silc.experiments.own_data import TOKENIZER_SAMPLE

    # `train`'s model flags, left out of `demo`, which trains DEFAULT_PRESET from scratch.
    parser.set_defaults(**{key: None for key in ("preset", "init_from", *FINE_TUNING_FLAGS)})
    # Flags of FLAG_RULES default to None (False): whether they were given is checked,
    # then these defaults fill in.
    parser.set_defaults(
        defaults={
            "num_scenes": 20_000,
            "class_only_captions": class_only_captions,
            "tokenizer_sample": TOKENIZER_SAMPLE,
            "eval_items": 2000,
            "eval_scenes": 500,
            "val_size": 1000,
        }
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a config entry, e.g. --set vision.depth=4 (repeatable).",
    )
    parser.add_argument("--config", help="A JSON file of overrides (applied before --set).")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        default="fashion_scenes",
        choices=SOURCES,
        help="fashion_scenes (offline, default), webdataset, tfrecord, csv or tfds.",
    )
    data.add_argument("--data-path", help="Shards, files, table or TFDS name of --data.")
    data.add_argument(
        "--image-key",
        help="The image of --data: a TFRecord feature, a CSV column, a TFDS field, or a "
        "WebDataset file extension (jpg, or alternatives jpg;png; default any image file).",
    )
    data.add_argument(
        "--caption-key",
        help="The caption(s) of --data: a TFRecord feature, a CSV column, a TFDS field, or a "
        "WebDataset file extension or .json field (default the .txt, else the .json's "
        "caption).",
    )
    data.add_argument(
        "--num-scenes", type=_at_least(1), help="Fashion training scenes (default 20000)."
    )
    data.add_argument(
        "--class-only-captions",
        type=_fraction,
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
    text = parser.add_argument_group("tokenizer")
    text.add_argument(
        "--tokenizer",
        help="A SentencePiece .model or WordPiece .txt file; its vocabulary must fit the text "
        "tower (text.vocabulary_size). Default: a WordPiece vocabulary trained on the captions.",
    )
    text.add_argument(
        "--vocabulary-size",
        type=_at_least(MIN_VOCABULARY_SIZE),
        help="The WordPiece vocabulary to train (without --tokenizer). Default: the text "
        "tower's vocabulary_size (the preset's, or --set text.vocabulary_size). The tower then "
        "embeds the vocabulary learned, which is smaller on a small corpus.",
    )
    text.add_argument(
        "--tokenizer-sample",
        type=_at_least(1),
        help="Captions the vocabulary is trained on: the first ones of --data, in its order "
        f"for --seed (default {TOKENIZER_SAMPLE}).",
    )
    parser.add_argument("--steps", type=_at_least(1), default=steps, help=STEPS_HELP)
    parser.add_argument(
        "--batch-size",
        type=_at_least(2, ": the other pairs of a batch are each pair's negatives"),
        default=batch_size,
    )
    parser.add_argument(
        "--checkpoint-every",
        type=_at_least(1),
        default=50,
        help="Steps per checkpoint; --steps must be a multiple of it.",
    )
    parser.add_argument("--seed", type=_at_least(0), default=0)
    parser.add_argument(
        "--output",
        default=output,
        help=f"The run's folder: a local path or any tf.io.gfile path (gs://bucket/run). "
        f"Default {output}.",
    )
    parser.add_argument(
        "--log-every",
        type=_at_least(1),
        default=10,
        help="TensorBoard scalars (tensorboard/train) every this many steps: each log's mean "
        "over the steps since the previous point, and the learning rate. Default 10.",
    )
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument(
        "--val-data",
        help="Validation pairs in the format of --data: shards, files or a table (for tfds, a "
        "split of --data-path, e.g. validation), read with --image-key / --caption-key. "
        "Image-text retrieval (Recall@1/5/10 both ways) on them every --eval-every steps and "
        "after training, into validation.csv and tensorboard/validation.",
    )
    evaluation.add_argument(
        "--val-size",
        type=_at_least(1),
        help="Validation pairs used: the first ones of --val-data (default 1000).",
    )
    evaluation.add_argument(
        "--eval-every",
        type=_at_least(1),
        help="Steps between validations (default: --checkpoint-every).",
    )
    evaluation.add_argument(
        "--val-class-names",
        help="A text file of class names, one per line (line i is class i): adds zero-shot "
        "classification of the --val-data images. Each image's class is its --val-label-key "
        "(an index from 0, or a name), else its first caption, which must be a class name.",
    )
    evaluation.add_argument(
        "--val-label-key",
        help="The class label of --val-data: a WebDataset file extension (cls) or .json "
        "field, a TFRecord feature, a CSV column or a TFDS field.",
    )
    evaluation.add_argument(
        "--eval-items", type=_at_least(1), help="Fashion-MNIST evaluation items (default 2000)."
    )
    evaluation.add_argument(
        "--eval-scenes", type=_at_least(1), help="Fashion-MNIST evaluation scenes (default 500)."
    )
    evaluation.add_argument(
        "--skip-evaluation",
        action="store_true",
        help="No evaluation after training (the Fashion-MNIST one, and the last --val-data "
        "one; --eval-every still runs).",
    )
    evaluation.add_argument(
        "--fashion-evaluation",
        action="store_true",
        help="Evaluate on the Fashion-MNIST test split after training on other --data (the "
        "default only for fashion_scenes).",
    )
    parser.add_argument("--quiet", action="store_true", help="One log line per epoch.")


def _add_fine_tuning_arguments(parser):
    group = parser.add_argument_group(
        "pretrained weights and fine-tuning (docs/command_line.md, docs/fine_tuning.md)"
    )
    group.add_argument(
        "--init-from",
        metavar="SOURCE",
        help="Start from pretrained weights, with the pretrained model's own tokenizer: a "
        "keras-hub SigLIP / CLIP preset name (siglip_base_patch16_224, downloaded on first "
        "use) or handle, a folder written by keras-hub's save_to_preset, a Hugging Face "
        "save_pretrained folder (config.json, safetensors, tokenizer files), or a folder "
        "written by SilcModel.save_to_preset. Not with --preset or the tokenizer flags.",
    )
    for tower in ("image", "text"):
        group.add_argument(
            f"--lock-{tower}",
            action="store_true",
            help=f"Freeze the {tower} tower{' (as LiT does)' if tower == 'image' else ''}, "
            f"but for its last --unlocked-{tower}-blocks.",
        )
    for tower in ("image", "text"):
        group.add_argument(
            f"--unlocked-{tower}-blocks",
            type=_at_least(0),
            metavar="N",
            help=f"With --lock-{tower}: its last N blocks, and its final norm, pooling head "
            "and projection, still train (default 0).",
        )
    group.add_argument(
        "--layer-decay",
        type=_layer_decay,
        metavar="F",
        help="Layer-wise learning-rate decay in (0, 1]: in a tower of L blocks, block i "
        "learns at lr * F ** (L - i), the embeddings at lr * F ** (L + 1).",
    )


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
        "a divergence) and, to continue it, raise --steps (see --steps); the model, data, "
        "batch size, seed, the schedule's shape and the optimizer's state stay those of the "
        "first run. A flag that does not apply to the chosen --data or mode is refused.",
    )
    train_parser.add_argument(
        "--preset",
        help=f"The architecture, trained from scratch (default {DEFAULT_PRESET}; "
        "`keras-silc presets` lists them). Not with --init-from.",
    )
    _add_training_arguments(train_parser, 200, 32, "runs/silc")
    _add_fine_tuning_arguments(train_parser)
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
        help="A .keras file; with --suite also any source that train --init-from takes (a "
        "keras-hub SigLIP/CLIP preset name or folder, a Hugging Face SigLIP/CLIP folder, a "
        "SilcModel.save_to_preset folder).",
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
        # str(KeyError) quotes its message.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"keras-silc: error: {message}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # TrainingDiverged and friends
        print(f"keras-silc: stopped: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
