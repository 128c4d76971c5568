"""Faults lose nothing: a run killed mid-way resumes to the weights of an uninterrupted one
(a real tokenizer, a reshuffling, non-deterministic pipeline), checkpoints survive a kill,
a failed run does not lock its folder, and bad values are refused where they enter."""

import os
import re
import signal
import subprocess
import sys
import time
import warnings

import keras
import numpy as np
import pytest
from conftest import weights_numpy

from keras_silc import cli
from keras_silc import training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small: 4 steps of 4 scenes at 16 px, one-block towers; killed after the first of two
# checkpoints. Most of the time goes to the subprocess's imports.
RUN = [
    "train",
    "--preset",
    "silc_tiny",
    "--steps",
    "4",
    "--checkpoint-every",
    "2",
    "--batch-size",
    "4",
    "--num-scenes",
    "32",
    "--skip-evaluation",
    "--quiet",
    "--set",
    "vision.image_size=16",
    "--set",
    "local_crop_size=8",
    "--set",
    "num_local_crops=2",
    "--set",
    "vision.depth=1",
    "--set",
    "text.depth=1",
]


def _final_weights(output):
    model = training.load_model_checked(os.path.join(output, "model.keras"))
    return weights_numpy(model.weights)


def _kill_after_first_checkpoint(output, extra=()):
    """Runs the CLI in a subprocess and SIGKILLs it once a checkpoint exists."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_silc.cli", *RUN, *extra, "--output", output],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = os.path.join(output, "checkpoints", "epoch-00001.keras")
    deadline = time.time() + 240
    while not os.path.exists(first) and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    finished = process.poll() is not None
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not finished, "the run ended before it could be killed"
    assert os.path.exists(first)
    assert not os.path.exists(os.path.join(output, "model.keras"))


@pytest.mark.parametrize("tokenizer", ["wordpiece", "sentencepiece"])
def test_a_run_killed_with_sigkill_resumes_to_the_weights_of_an_uninterrupted_one(
    tmp_path, tokenizer
):
    if tokenizer == "sentencepiece" and os.environ.get("KERAS_BACKEND") != "torch":
        # The tokenizer, the only difference from [wordpiece], runs in tf.data whatever the
        # backend: once is enough (torch session).
        pytest.skip("the SentencePiece variant runs in the torch session")
    extra = ["--vocabulary-size", "64"]  # the WordPiece vocabulary trained on the captions
    if tokenizer == "sentencepiece":
        from keras_silc.data import SilcTokenizer
        from keras_silc.experiments import fashion as demo

        _, captions = demo.make_pairs("fashion_scenes", num_scenes=32, class_only_captions=0.0)
        spm = SilcTokenizer.from_captions(captions, 64, 16, model_type="unigram")
        path = str(tmp_path / "captions.model")
        with open(path, "wb") as handle:
            handle.write(spm.tokenizer.proto)
        extra = ["--tokenizer", path]
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    assert cli.main([*RUN, *extra, "--output", whole]) == 0
    _kill_after_first_checkpoint(killed, extra)
    assert cli.main([*RUN, *extra, "--output", killed]) == 0
    for a, b in zip(_final_weights(whole), _final_weights(killed), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # The learning rate is the one setting a resumed run may change (the guard's advice).
    assert cli.main([*RUN, *extra, "--set", "recipe.learning_rate=5e-4", "--output", killed]) == 0
    assert cli.main([*RUN, *extra, "--set", "recipe.warmup_steps=2", "--output", killed]) == 2


# ----------------------------------------------------------------- checkpoints
def _checkpoint_run(tmp_path, name, **kwargs):
    from test_training import _run

    return _run(tmp_path / name, **kwargs)


def test_a_damaged_newest_checkpoint_is_skipped_and_the_run_resumes_from_an_intact_one(
    tmp_path,
):
    from test_training import Crash
    from test_training import CrashAfter

    whole, _, _ = _checkpoint_run(tmp_path, "whole")
    with pytest.raises(Crash):
        _checkpoint_run(tmp_path, "killed", callbacks=[CrashAfter(2)])
    checkpoints = tmp_path / "killed" / "checkpoints"
    newest, epoch = training.latest_checkpoint(str(checkpoints))
    assert epoch == 2 and newest.endswith("epoch-00002.keras")
    newest = checkpoints / "epoch-00002.keras"
    # A save cut short (as Keras's in-place writes left it) and a temporary file of an
    # atomic save that was killed.
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    (checkpoints / ".epoch-00003.keras.partial-1.keras").write_bytes(b"PK\x03\x04")
    with pytest.warns(UserWarning, match=r"Skipping a damaged checkpoint.*truncated zip"):
        resumed, history, start = _checkpoint_run(tmp_path, "killed")
    assert start == 1 and len(history["loss"]) == 3
    assert not list(checkpoints.glob(".*partial*"))
    for a, b in zip(weights_numpy(whole.weights), weights_numpy(resumed.weights), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    with open(tmp_path / "killed" / "history.csv") as handle:
        assert len(handle.read().strip().splitlines()) == 1 + 4  # no epoch twice
    # A finished run started again does nothing.
    _, history, start = _checkpoint_run(tmp_path, "killed")
    assert start == 4 and history == {}


def test_checkpoints_are_written_under_a_temporary_name_and_renamed(tmp_path, monkeypatch):
    from conftest import tiny_model

    model = tiny_model()
    seen = []
    original = keras.Model.save

    def spy(self, path, *args, **kwargs):
        seen.append(os.path.basename(path))
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", spy)
    path = tmp_path / "epoch-00001.keras"
    training.save_model_atomically(model, path)
    assert seen[0].startswith(".epoch-00001.keras.partial-")
    assert os.listdir(tmp_path) == ["epoch-00001.keras"]
    training.check_model_file(path)


def test_unloadable_files_say_what_is_wrong_with_them(tmp_path, capsys):
    from conftest import tiny_model

    good = tmp_path / "good.keras"
    training.save_model_atomically(tiny_model(), good)
    cases = {
        "truncated.keras": (good.read_bytes()[:5000], "truncated zip archive"),
        "empty.keras": (b"", "is empty"),
        "text.keras": (b"hello, not a model", "not a .keras model file: it is not a zip"),
    }
    import zipfile

    with zipfile.ZipFile(tmp_path / "zip.keras", "w") as archive:
        archive.writestr("notes.txt", "hi")
    for name, (content, _) in cases.items():
        (tmp_path / name).write_bytes(content)
    cases["zip.keras"] = (None, "not a .keras model file (no config.json)")
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    other.save(tmp_path / "other.keras")
    cases["other.keras"] = (None, "holds a Sequential, not a SilcModel")
    for name, (_, message) in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            training.load_model_checked(tmp_path / name)
        # (pytest.raises matches a regex; the CLI prints the same text)
        assert cli.main(["evaluate", str(tmp_path / name)]) == 2
        assert message in capsys.readouterr().err


# ------------------------------------------------------------- the run's folder
def test_a_run_that_stopped_before_its_first_checkpoint_does_not_lock_the_folder(tmp_path):
    # A typo is refused before anything is written, and the corrected command runs.
    args = ["train", "--output", str(tmp_path), "--steps", "2", "--checkpoint-every", "2"]
    assert cli.main([*args, "--set", "vison.depth=4"]) == 2
    assert not os.path.exists(tmp_path / "run_config.json")
    # A run that wrote its settings and then died before its first checkpoint.
    (tmp_path / "run_config.json").write_text('{"preset": "silc_b16", "seed": 5}')
    _, history, start = _checkpoint_run(tmp_path, ".", total_steps=2)
    assert start == 0 and len(history["loss"]) == 1
    # Once it holds a checkpoint, the folder belongs to its run.
    import json

    (tmp_path / "run_config.json").write_text(json.dumps({"preset": "silc_b16", "seed": 5}))
    with pytest.raises(ValueError, match=r"different run.*\['preset'\]"):
        _checkpoint_run(tmp_path, ".", total_steps=4)


def test_a_diverged_run_continues_with_a_lower_learning_rate(tmp_path):
    from test_training import PoisonLoss
    from test_training import _run

    with pytest.raises(training.TrainingDiverged, match="lower the learning rate"):
        _run(tmp_path, callbacks=[PoisonLoss()])
    model, history, start = _run(tmp_path, learning_rate=2e-4)
    assert start == 1 and len(history["loss"]) == 3
    assert model.optimizer._learning_rate.learning_rate == 2e-4
    assert model.recipe["learning_rate"] == 2e-4


# ----------------------------------------------------------------- value checks
def test_token_ids_are_checked_where_batches_are_made_and_in_encode_text():
    from conftest import tiny_model

    from keras_silc.checks import check_token_ids

    model = tiny_model()
    size = model.text_encoder.vocabulary_size
    ids = np.ones((2, 16), "int32")
    check_token_ids(ids, size)  # fine
    with pytest.raises(ValueError, match="encode_text's token ids hold the id"):
        model.encode_text(np.full((2, 16), size))
    with pytest.raises(ValueError, match=f"the id {size}, but the text tower embeds only"):
        check_token_ids(np.full((2, 16), size), size)
    with pytest.raises(ValueError, match="negative id -1"):
        check_token_ids(-ids, size)
    with pytest.raises(ValueError, match="must be integers"):
        check_token_ids(ids * 0.5, size)
    # The tokenizer's output, in tf.data as eagerly, never leaves the vocabulary.
    import tensorflow as tf

    from keras_silc.data import SilcTokenizer

    tokenizer = SilcTokenizer.from_captions(["a red bag", "two blue shoes"] * 4, 20, 8)
    out = tf.data.Dataset.from_tensor_slices(["a red bag", "a green hat"]).batch(2).map(tokenizer)
    assert next(iter(out)).numpy().max() < tokenizer.vocabulary_size


def test_images_outside_zero_one_and_nan_pixels_are_refused_where_they_enter():
    from keras_silc import data

    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    with pytest.raises(ValueError, match="divide by 255"):
        data.from_arrays(images, ["a", "b"])
    images = images / 255.0
    data.from_arrays(images, ["a", "b"])  # fine
    images[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN or infinite pixel.*\(1, 2, 3, 0\)"):
        data.from_arrays(images, ["a", "b"])
    data.from_arrays((images[:1] * 255).astype("uint8"), ["a"])  # uint8 passes


def test_a_non_finite_loss_stops_fit_with_the_guards_message():
    from conftest import tiny_model

    from keras_silc.callbacks import DivergenceGuard
    from keras_silc.callbacks import with_divergence_guard

    model = tiny_model()
    model.compile()
    batch = model.preprocessor.example_batch(4, seed=0)
    batch["image"] = np.asarray(keras.ops.convert_to_numpy(batch["image"])).copy()
    batch["image"][0, 0, 0, 0] = np.nan
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    callbacks = with_divergence_guard()
    assert len(with_divergence_guard(callbacks)) == 1
    assert isinstance(callbacks[0], DivergenceGuard)
    with pytest.raises(training.TrainingDiverged, match="is not finite.*lower the learning rate"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(dataset, steps_per_epoch=2, epochs=1, callbacks=callbacks, verbose=0)
    # SilcModel.fit installs the guard itself.
    model = tiny_model()
    model.compile()
    with pytest.raises(training.TrainingDiverged, match="is not finite"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)
    # and the preprocessor's batch check finds the NaN pixel before any step.
    with pytest.raises(ValueError, match="NaN or infinite pixel"):
        model.preprocessor.validate_batch(batch)


# --------------------------------------------------------------------- the CLI
def test_every_bad_flag_is_refused_with_a_message_that_names_it(tmp_path, capsys):
    out = ["--output", str(tmp_path / "run")]
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    cases = [
        (["--set", "vision.depth=-1"], "--set vision.depth=-1: must be at least 1"),
        (["--vocabulary-size", "3"], "argument --vocabulary-size: 3 is less than 16"),
        (["--steps", "5", "--checkpoint-every", "2"], "--steps 5 is not a multiple of"),
        (["--set", "vision.image_size=abc"], '--set vision.image_size="abc": must be an integer'),
        (["--set", "vision=5"], "--set vision=5: 'vision' is a group of settings"),
        (["--set", "vison.depth=4"], "unknown setting 'vison' of the model. Did you mean 'vision'"),
        (["--set", "vision.dept=4"], "Did you mean 'vision.depth'?"),
        (["--set", "head.num_prototypes=-3"], "--set head.num_prototypes=-3: must be at least 1"),
        (["--set", "head.num_prototypes=1.5"], "--set head.num_prototypes=1.5: must be an integer"),
        (["--set", "contrastive_chunk_size=0"], "contrastive_chunk_size=0: must be at least 1"),
        (["--set", "recipe.learning_rate=0"], "recipe.learning_rate=0: must be positive"),
        (["--config", str(listed)], "holds a JSON list; it must hold an object"),
        (["--batch-size", "1"], "--batch-size: 1 is less than 2: the other pairs of a batch"),
        (["--set", "vision.width=33"], "width"),
        (["--class-only-captions", "2"], "argument --class-only-captions: 2.0 is not in [0, 1]"),
    ]
    for flags, message in cases:
        assert cli.main(["train", *out, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert message in err, (flags, err)
        assert "Traceback" not in err
    # Nothing is written for a refused command (vision.width=33 made checkpoints/ before).
    assert not os.path.exists(tmp_path / "run")


def test_evaluate_never_overwrites_a_training_runs_report(tmp_path, capsys):
    from conftest import tiny_model

    path = tmp_path / "model.keras"
    training.save_model_atomically(tiny_model(), path)
    (tmp_path / "run_config.json").write_text("{}")
    (tmp_path / "report.json").write_text('{"training": 1}')
    assert cli.main(["evaluate", str(path), "--output", str(tmp_path)]) == 2
    assert "is a training run's folder" in capsys.readouterr().err
    assert (tmp_path / "report.json").read_text() == '{"training": 1}'


def test_a_vocabulary_too_small_for_the_captions_is_refused(tmp_path, capsys):
    from keras_silc.data import SilcTokenizer

    vocabulary = tmp_path / "vocabulary.txt"
    vocabulary.write_text("\n".join(["[PAD]", "[UNK]", "[EOS]", "zebra"]) + "\n")
    tokenizer = SilcTokenizer.from_file(str(vocabulary), 8)
    assert tokenizer.unknown_fraction(["a red bag", "zebra"]) == 0.75
    args = ["train", "--output", str(tmp_path / "run"), "--steps", "2", "--checkpoint-every", "2"]
    assert cli.main([*args, "--num-scenes", "16", "--tokenizer", str(vocabulary)]) == 2
    assert "of the training captions' tokens are unknown" in capsys.readouterr().err


def test_a_batch_check_names_the_bad_key():
    from keras_silc.checks import check_batch_values

    batch = {"image": np.zeros((2, 8, 8, 3), "float32"), "text": np.ones((2, 4), "int32")}
    assert check_batch_values(batch, 8) is batch
    with pytest.raises(ValueError, match=r"batch\['text'\] hold the id 9"):
        check_batch_values({**batch, "text": np.full((2, 4), 9)}, 8)
    with pytest.raises(ValueError, match=r"batch\['local_crops'\] must be floats in \[0, 1\]"):
        check_batch_values({**batch, "local_crops": np.full((2, 1, 4, 4, 3), 2.0)}, 8)
