"""`keras-silc train --init-from`: a run that starts from a pretrained model's weights and
tokenizer (a tiny keras-hub preset written by keras-hub's own save_to_preset, no download), the
fine-tuning flags, and every bad source or setting refused before anything is written."""

import json
import os
import shutil

import numpy as np
import pytest
from conftest import to_numpy
from conftest import weights_numpy
from test_cli_own_data import own  # noqa: F401 (the training shards)
from test_interop import PRESET_CAPTIONS
from test_interop import _hf_model
from test_interop import _huggingface_tokenizer
from test_interop import _keras_hub_preset
from test_interop import _normalized

from keras_silc import SilcModel
from keras_silc import cli
from keras_silc import training
from keras_silc.experiments import pretrained

keras_hub = pytest.importorskip("keras_hub")

# The tiny preset's model takes 32 px images; a tiny head, two small local crops.
SMALL = [
    "--batch-size",
    "4",
    "--checkpoint-every",
    "1",
    "--quiet",
    "--set",
    "num_local_crops=2",
    "--set",
    "local_crop_size=8",
    "--set",
    "head.num_prototypes=16",
    "--set",
    "head.hidden_dim=16",
    "--set",
    "head.bottleneck_dim=8",
]
IMAGES = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def hub_preset(tmp_path_factory):
    """A keras-hub SigLIP preset folder (2 blocks per tower) with its SentencePiece tokenizer."""
    return _keras_hub_preset("siglip", tmp_path_factory.mktemp("hub") / "siglip")


def test_a_run_starts_from_the_preset_and_keeps_the_locked_text_tower(
    own,  # noqa: F811
    hub_preset,
    tmp_path,
    monkeypatch,
    capsys,
):
    # The model the run starts from, as SilcModel.from_keras_hub returns it.
    started = {}
    from_keras_hub = SilcModel.from_keras_hub.__func__

    def spy(cls, source, **overrides):
        model = from_keras_hub(cls, source, **overrides)
        started.update(
            image=to_numpy(model.encode_image(IMAGES)),
            image_weights=weights_numpy(model.student.encoder.weights),
            text_weights=weights_numpy(model.text_encoder.weights),
        )
        return model

    monkeypatch.setattr(SilcModel, "from_keras_hub", classmethod(spy))
    output = str(tmp_path / "run")
    args = ["train", "--init-from", hub_preset, "--lock-text", "--output", output, *SMALL]
    args += ["--data", "webdataset", "--data-path", own["train"], "--steps", "2"]
    assert cli.main(args) == 0
    monkeypatch.undo()

    # The first step's embeddings are keras-hub's: the weights came from the preset.
    backbone = keras_hub.models.Backbone.from_preset(hub_preset)
    hub_image = _normalized(backbone.get_vision_embeddings(IMAGES * 2 - 1))
    np.testing.assert_allclose(started["image"], hub_image, atol=1e-5)
    # The tokenizer is the preset's: keras-hub's own preprocessor gives the same ids.
    model = training.load_model_checked(os.path.join(output, "model.keras"))
    hub_preprocessor = keras_hub.models.SigLIPPreprocessor.from_preset(hub_preset)
    ids = to_numpy(hub_preprocessor({"images": None, "prompts": PRESET_CAPTIONS})["token_ids"])
    np.testing.assert_array_equal(model.preprocessor.tokenize(PRESET_CAPTIONS), ids)
    # Two steps later the locked text tower is the preset's, to the bit; the image tower moved.
    text_weights = weights_numpy(model.text_encoder.weights)
    for ours, first in zip(text_weights, started["text_weights"], strict=True):
        np.testing.assert_array_equal(ours, first)
    hub_text = _normalized(backbone.get_text_embeddings(ids))
    np.testing.assert_allclose(to_numpy(model.encode_text(ids)), hub_text, atol=1e-5)
    moved = weights_numpy(model.student.encoder.weights)
    assert any(
        not np.array_equal(a, b) for a, b in zip(moved, started["image_weights"], strict=True)
    )
    assert model.lock_text and not model.lock_image

    # The run records where it started from.
    with open(os.path.join(output, "run_config.json")) as handle:
        recorded = json.load(handle)
    assert recorded["preset"] is None and recorded["overrides"]["lock_text"] is True
    # A pretrained start fine-tunes at 1e-5 unless told otherwise, not at the recipe's 1e-3.
    assert recorded["overrides"]["recipe"]["learning_rate"] == cli.FINE_TUNING_LEARNING_RATE
    assert model.recipe["learning_rate"] == 1e-5
    assert recorded["init_from"] == {
        "source": os.path.abspath(hub_preset),
        "format": "keras-hub",
        "image_size": 32,
    }
    # Run again, it resumes from its checkpoint without reading the source.
    capsys.readouterr()

    def no_reading(*args, **kwargs):
        raise AssertionError("the source was read again")

    monkeypatch.setattr(pretrained, "describe", no_reading)
    monkeypatch.setattr(pretrained, "load", no_reading)
    assert cli.main(args) == 0
    assert '"resumed_from_step": 2' in capsys.readouterr().out
    # Changing a fine-tuning flag makes it another run.
    assert cli.main([arg for arg in args if arg != "--lock-text"]) == 2
    assert "different run (differs in ['overrides'])" in capsys.readouterr().err


def _copy(preset, folder):
    shutil.copytree(preset, folder)
    return str(folder)


def test_bad_sources_and_fine_tuning_settings_are_refused_before_anything_is_written(
    hub_preset, tmp_path, capsys
):
    output = tmp_path / "run"
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "model.keras").write_text("")
    no_vocabulary = _copy(hub_preset, tmp_path / "no_vocabulary")
    os.remove(os.path.join(no_vocabulary, "assets", "tokenizer", "vocabulary.spm"))
    mismatched = _copy(hub_preset, tmp_path / "mismatched")
    config = os.path.join(mismatched, "config.json")
    with open(config) as handle:
        text = handle.read()
    with open(config, "w") as handle:  # one block fewer than model.weights.h5 holds
        handle.write(text.replace('"num_layers": 2', '"num_layers": 1', 1))
    hugging_face = tmp_path / "hugging_face"
    _hf_model("siglip", hugging_face)  # weights, no tokenizer files
    hub = ["--init-from", hub_preset]
    cases = [
        (["--init-from", str(tmp_path / "missing")], "missing': no such folder. Pass a keras-hub"),
        (["--init-from", str(empty)], "the folder has no config.json (it holds [])"),
        (["--init-from", str(tmp_path / "model.keras")], "is a file; --init-from takes a folder"),
        (["--init-from", "siglip_tiny"], "not one of keras-hub's SigLIP or CLIP presets (clip_"),
        (["--init-from", "silc_tiny"], "random weights, not pretrained weights: train it from"),
        (["--init-from", no_vocabulary], "vocabulary.spm"),
        (["--init-from", mismatched], "model.weights.h5 does not fit its config.json (the model"),
        (
            ["--init-from", str(hugging_face)],
            "the siglip checkpoint has no tokenizer files (spiece.model). Save",
        ),
        ([*hub, "--set", "vision.image_size=16"], "the image tower is the pretrained model's"),
        ([*hub, "--set", "text.depth=1"], "only text.remat may be set"),
        (
            [*hub, "--lock-text", "--unlocked-text-blocks", "3"],
            f"--unlocked-text-blocks 3: the text tower of --init-from {hub_preset!r} has 2 "
            "blocks; use a number from 0 (the whole tower locked) to 2.",
        ),
        ([*hub, "--lock-image"], "--lock-image freezes the whole image tower, so SILC's self-"),
        ([*hub, "--lock-text", "--set", "lock_text=false"], "--lock-text and --set / --config"),
        (
            ["--lock-image", "--unlocked-image-blocks", "3"],
            "--unlocked-image-blocks 3: the image tower of the preset silc_tiny has 2 blocks",
        ),
        (["--set", "unlocked_text_blocks=1"], "unlocked_text_blocks=1 only applies to a locked"),
        (["--layer-decay", "0"], "argument --layer-decay: 0.0 is not in (0, 1]"),
        (["--layer-decay", "1.5"], "argument --layer-decay: 1.5 is not in (0, 1]"),
        (["--unlocked-image-blocks", "-1"], "argument --unlocked-image-blocks: -1 is less than 0"),
    ]
    for flags, message in cases:
        assert cli.main(["train", "--output", str(output), *flags]) == 2, flags
        err = capsys.readouterr().err
        assert message in err, (flags, err)
        assert not output.exists(), flags
    # Locking a tower trained from scratch is allowed, with a warning.
    (tmp_path / "a_file").write_text("")
    assert cli.main(["train", "--output", str(tmp_path / "a_file"), "--lock-text"]) == 2
    err = capsys.readouterr().err
    assert "warning: --lock-text without --init-from freezes a randomly initialised" in err
    assert "Cannot create the output folder" in err


def test_the_three_formats_are_told_apart_and_load_with_their_tokenizers(hub_preset, tmp_path):
    assert pretrained.describe(hub_preset)["format"] == "keras-hub"
    hugging_face = str(tmp_path / "hugging_face")
    _hf_model("siglip", hugging_face)
    _huggingface_tokenizer("siglip", hugging_face)
    described = pretrained.describe(hugging_face)
    assert described == {"source": os.path.abspath(hugging_face), "format": "huggingface"}
    assert pretrained.load(described).tokenizer.pad_with_end_token  # SigLIP's padding

    model = pretrained.load(pretrained.describe(hub_preset), head={"num_prototypes": 16})
    folder = str(tmp_path / "silc")
    model.save_to_preset(folder)
    described = pretrained.describe(folder)
    assert described["format"] == "keras-silc"
    reloaded = pretrained.load(described)
    for ours, theirs in zip(
        weights_numpy(reloaded.weights), weights_numpy(model.weights), strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(
        reloaded.preprocessor.tokenize(PRESET_CAPTIONS),
        model.preprocessor.tokenize(PRESET_CAPTIONS),
    )
