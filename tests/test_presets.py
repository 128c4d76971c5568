"""Preset folders (keras-hub's layout): save_to_preset -> from_preset gives the same model,
preprocessor and tokenizer on every backend; named presets; every bad input names its file.

`python tests/test_presets.py` (under KERAS_BACKEND=jax) writes the fixture
tests/data/silc_preset_tiny/ and the numbers it must give on every backend."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
from conftest import to_numpy

from keras_silc import ImageFeatureExtractor
from keras_silc import SilcModel
from keras_silc import SilcPreprocessor
from keras_silc.data import SilcTokenizer
from keras_silc.models import upgrade_model_file
from keras_silc.models.presets import PRESETS
from keras_silc.models.presets import merge_config

DATA = os.path.join(os.path.dirname(__file__), "data")
FIXTURE = os.path.join(DATA, "silc_preset_tiny")
EXPECTED = os.path.join(DATA, "silc_preset_tiny_expected.npz")
CAPTIONS = ["a red bag at the top left", "a blue shoe", "two shirts on the right", "a coat"]
# A small SILC: 16 px images, width 16, one block per tower, K = 32.
SMALL = {
    "vision": {"image_size": 16, "width": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32},
    "text": {
        "vocabulary_size": 48,
        "max_length": 8,
        "width": 16,
        "depth": 1,
        "num_heads": 2,
        "mlp_dim": 32,
        "output_dim": 16,
    },
    "head": {"num_prototypes": 32, "hidden_dim": 32, "bottleneck_dim": 16},
    "local_crop_size": 8,
    "num_local_crops": 2,
}
# The fixture's model: no teacher and mean pooling, to keep model.weights.h5 under 200 KB.
FIXTURE_OVERRIDES = {
    "vision": {"pooling": "gap"},
    "ema_teacher": False,
    "self_distillation": False,
}
LAYOUT = {
    "config.json",
    "model.weights.h5",
    "preprocessor.json",
    "tokenizer.json",
    "metadata.json",
}


def _tokenizer(model_type="wordpiece"):
    return SilcTokenizer.from_captions(CAPTIONS * 4, 40, 8, model_type=model_type)


def _model(tokenizer=None, seed=0, **overrides):
    """A small SILC model whose weights are all random (teacher and center included)."""
    keras.utils.set_random_seed(seed)
    model = SilcModel.from_preset(
        "silc_tiny", tokenizer=tokenizer, **merge_config(SMALL, overrides)
    )
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.1, w.shape).astype("float32") for w in model.weights])
    return model


def _images():
    return np.random.default_rng(0).random((3, 16, 16, 3), dtype=np.float32)


def _outputs(model):
    ids = model.preprocessor.tokenize(CAPTIONS)
    return {
        "ids": ids,
        "image": to_numpy(model.encode_image(_images())),
        "text": to_numpy(model.encode_text(ids)),
    }


def _files(folder):
    return {
        os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
        for root, _, names in os.walk(folder)
        for name in names
    }


def _assert_same_model(loaded, model):
    for new, old in zip(loaded.weights, model.weights, strict=True):
        # The model's own name is numbered by how many models the process has built.
        assert new.path.split("/", 1)[1] == old.path.split("/", 1)[1]
        np.testing.assert_array_equal(to_numpy(new), to_numpy(old), err_msg=new.path)
    expected, got = _outputs(model), _outputs(loaded)
    np.testing.assert_array_equal(got["ids"], expected["ids"])
    np.testing.assert_allclose(got["image"], expected["image"], atol=1e-6)
    np.testing.assert_allclose(got["text"], expected["text"], atol=1e-6)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(model, folder): a small SILC with a SentencePiece tokenizer, saved as a preset."""
    model = _model(_tokenizer("unigram"))
    folder = str(tmp_path_factory.mktemp("presets") / "small")
    assert model.save_to_preset(folder) == folder
    return model, folder


def _copy(folder, tmp_path, name="copy"):
    return shutil.copytree(folder, str(tmp_path / name))


# ----------------------------------------------------------------- round trips
def test_save_to_preset_writes_keras_hubs_layout_and_from_preset_gives_the_same_model(saved):
    model, folder = saved
    assert _files(folder) == LAYOUT | {"assets/tokenizer/vocabulary.spm"}
    with open(os.path.join(folder, "config.json")) as file:
        config = json.load(file)
    assert config["registered_name"] == "keras_silc>SilcModel"
    assert config["config"]["preprocessor"] is None  # in preprocessor.json
    with open(os.path.join(folder, "metadata.json")) as file:
        metadata = json.load(file)
    assert metadata["backend"] == keras.backend.backend()
    assert metadata["keras_version"] == keras.version()
    assert metadata["parameter_count"] == model.count_params()
    assert {"keras_silc_version", "date_saved"} <= set(metadata)
    assert set(metadata["files"]) == _files(folder) - {"metadata.json"}

    loaded = SilcModel.from_preset(folder)
    _assert_same_model(loaded, model)  # the teacher and the center too
    assert loaded.preprocessor.get_config() == model.preprocessor.get_config()
    ignore = {"name", "preprocessor"}
    assert {k: v for k, v in loaded.get_config().items() if k not in ignore} == {
        k: v for k, v in model.get_config().items() if k not in ignore
    }


def test_overrides_go_to_the_model_or_the_preprocessor_and_weights_are_optional(saved):
    model, folder = saved
    tuned = SilcModel.from_preset(
        folder, num_local_crops=3, recipe={"learning_rate": 5e-5}, inference_tower="teacher"
    )
    assert tuned.preprocessor.num_local_crops == 3
    assert tuned.recipe["learning_rate"] == 5e-5
    np.testing.assert_array_equal(to_numpy(tuned.center), to_numpy(model.center))
    random = SilcModel.from_preset(folder, load_weights=False)
    assert random.vision_config == model.vision_config
    assert not np.array_equal(to_numpy(random.center), to_numpy(model.center))
    other = _tokenizer("wordpiece")
    swapped = SilcModel.from_preset(folder, tokenizer=other)
    np.testing.assert_array_equal(swapped.preprocessor.tokenize(CAPTIONS), other(CAPTIONS))


def test_a_bad_override_is_refused_before_anything_is_built(saved, tmp_path):
    _, folder = saved
    cases = [
        (
            {"contrastve_loss": "siglip"},
            "contrastve_loss: unknown setting.*Did you mean 'contrastive_loss'",
        ),
        ({"vision": {"dept": 2}}, "vision.dept: .*Did you mean 'vision.depth'"),
        ({"head": {"num_prototypes": 0}}, "head.num_prototypes=0: must be at least 1"),
        ({"teacher_momentum": 2.0}, r"teacher_momentum=2.0: must lie in \[0, 1\]"),
        (
            {"recipe": {"warmup_step": 5}},
            "recipe.warmup_step: unknown setting 'warmup_step' in 'recipe'",
        ),
        ({"num_local_crops": -1}, "num_local_crops=-1: must be at least 0"),
        ({"vision": 3}, "vision=3: 'vision' is a group of settings"),
        ({"teacher_temperature": 0.0}, "teacher_temperature=0.0: must be positive"),
    ]
    for overrides, message in cases:
        for preset in ("silc_tiny", folder):
            with pytest.raises(ValueError, match="SilcModel.from_preset override " + message):
                SilcModel.from_preset(preset, **overrides)
    # from_keras_hub checks before it loads (here: before it would download).
    with pytest.raises(ValueError, match="SilcModel.from_keras_hub override head.num_prot"):
        SilcModel.from_keras_hub("siglip_base_patch16_224", head={"num_prototypes": -1})
    with pytest.raises(ValueError, match="from_huggingface override.*'contrastive_loss'"):
        SilcModel.from_huggingface(str(tmp_path), contrastve_loss="clip")
    with pytest.raises(ValueError, match="'silc_tiy'. Did you mean 'silc_tiny'"):
        SilcModel.from_preset("silc_tiy")
    # The constructor itself, for a model built from a config.
    config = SilcModel.from_preset("silc_tiny").get_config()
    with pytest.raises(ValueError, match="student_temperature must be a positive number"):
        SilcModel.from_config({**config, "student_temperature": 0.0})
    # 0 was taken as "the default" (x or default); negatives failed in math.log at fit.
    for name in ("logit_scale_init", "max_logit_scale"):
        for value in (0.0, -1.0):
            with pytest.raises(ValueError, match=f"{name} must be a positive number"):
                SilcModel.from_config({**config, name: value})
    assert SilcModel.from_config({**config, "logit_scale_init": 5.0}).logit_scale_init == 5.0
    # A warm-up start with no warm-up steps did nothing.
    with pytest.raises(ValueError, match="Set both, or neither"):
        SilcModel.from_config({**config, "warmup_teacher_temperature": 0.02})
    # Self-distillation with no local crops failed inside Keras's attention at fit.
    with pytest.raises(ValueError, match="trains on local_crops .* num_local_crops is 0"):
        SilcModel.from_preset("silc_tiny", num_local_crops=0)
    assert SilcModel.from_preset("silc_tiny", num_local_crops=0, self_distillation=False)


def test_named_presets_are_listed_with_whether_they_carry_weights(saved, monkeypatch):
    _, folder = saved
    assert set(SilcModel.presets) == set(PRESETS)
    assert not any(entry["has_weights"] for entry in SilcModel.presets.values())
    assert SilcModel.presets["silc_b16"]["description"] == PRESETS["silc_b16"]["description"]
    # A named preset with a "handle" loads the weights there.
    monkeypatch.setitem(PRESETS, "silc_small_trained", {"description": "x", "handle": folder})
    assert SilcModel.presets["silc_small_trained"]["has_weights"] is True
    _assert_same_model(SilcModel.from_preset("silc_small_trained"), saved[0])


@pytest.mark.parametrize("model_type", ["unigram", "wordpiece"])
def test_tokenizer_and_preprocessor_presets_round_trip(model_type, saved, tmp_path):
    tokenizer = _tokenizer(model_type)
    tokenizer.save_to_preset(tmp_path / "tokenizer")
    vocabulary = "vocabulary.spm" if model_type == "unigram" else "vocabulary.txt"
    assert _files(tmp_path / "tokenizer") == {
        "tokenizer.json",
        "metadata.json",
        f"assets/tokenizer/{vocabulary}",
    }
    again = SilcTokenizer.from_preset(tmp_path / "tokenizer")
    np.testing.assert_array_equal(again(CAPTIONS), tokenizer(CAPTIONS))

    preprocessor = SilcPreprocessor(
        tokenizer=tokenizer, image_size=16, patch_size=8, local_crop_size=8
    )
    preprocessor.save_to_preset(tmp_path / "preprocessor")
    loaded = SilcPreprocessor.from_preset(tmp_path / "preprocessor")
    assert loaded.get_config() == preprocessor.get_config()
    np.testing.assert_array_equal(loaded.tokenize(CAPTIONS), preprocessor.tokenize(CAPTIONS))
    # A model's preset holds both.
    model, folder = saved
    np.testing.assert_array_equal(
        SilcTokenizer.from_preset(folder)(CAPTIONS), model.tokenizer(CAPTIONS)
    )
    assert SilcPreprocessor.from_preset(folder).get_config() == model.preprocessor.get_config()


def test_the_old_tokenizer_names_warn_and_still_work(tmp_path):
    tokenizer = _tokenizer()
    with pytest.warns(DeprecationWarning, match="save_to_preset"):
        tokenizer.save_to_directory(tmp_path / "old")
    with pytest.warns(DeprecationWarning, match="from_preset"):
        again = SilcTokenizer.from_directory(tmp_path / "old")
    np.testing.assert_array_equal(again(CAPTIONS), tokenizer(CAPTIONS))


def test_a_handle_resolved_by_keras_hub_loads_the_same_model(saved, tmp_path, monkeypatch):
    """`ram://` is a tf.io.gfile scheme like `gs://`: written by copying, read through
    keras-hub's `get_file` (downloaded into KERAS_HOME's cache)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    model, _ = saved
    handle = f"ram://keras_silc_tests/{tmp_path.name}/small"
    model.save_to_preset(handle)
    with pytest.raises(FileExistsError, match="not empty.*overwrite=True"):
        model.save_to_preset(handle)
    _assert_same_model(SilcModel.from_preset(handle), model)


def test_a_folder_named_like_a_keras_hub_preset_is_read_from_disk(saved, tmp_path, monkeypatch):
    model, folder = saved
    monkeypatch.chdir(tmp_path)
    _copy(folder, tmp_path, "siglip_base_patch16_224")
    _assert_same_model(SilcModel.from_preset("siglip_base_patch16_224"), model)


def test_a_preset_saved_under_jax_loads_to_the_same_numbers_on_every_backend():
    assert sum(os.path.getsize(os.path.join(FIXTURE, f)) for f in _files(FIXTURE)) < 200_000
    model = SilcModel.from_preset(FIXTURE)
    expected = np.load(EXPECTED)
    got = _outputs(model)
    np.testing.assert_array_equal(got["ids"], expected["ids"])
    np.testing.assert_allclose(got["image"], expected["image"], atol=1e-5)
    np.testing.assert_allclose(got["text"], expected["text"], atol=1e-5)


def test_image_feature_extractor_presets_round_trip(saved, tmp_path):
    model, folder = saved
    extractor = model.image_feature_extractor()
    extractor.save_to_preset(tmp_path / "features")
    loaded = ImageFeatureExtractor.from_preset(tmp_path / "features")
    np.testing.assert_allclose(
        to_numpy(loaded(_images())["pooled"]), to_numpy(extractor(_images())["pooled"]), atol=1e-6
    )
    with pytest.raises(ValueError, match="describes a SilcModel.*SilcModel.from_preset"):
        ImageFeatureExtractor.from_preset(folder)
    with pytest.raises(ValueError, match="describes a ImageFeatureExtractor"):
        SilcModel.from_preset(tmp_path / "features")


# ------------------------------------------------------------------ bad input
def test_a_missing_file_is_named_with_the_fix(saved, tmp_path):
    _, folder = saved
    cases = [
        ("model.weights.h5", FileNotFoundError, "has no model.weights.h5.*load_weights=False"),
        ("preprocessor.json", FileNotFoundError, "has no preprocessor.json.*metadata.json lists"),
        ("assets/tokenizer/vocabulary.spm", FileNotFoundError, "has no assets/tokenizer/voc"),
        ("config.json", FileNotFoundError, "has no config.json.*SilcModel.save_to_preset"),
    ]
    for index, (name, error, match) in enumerate(cases):
        copy = _copy(folder, tmp_path, f"copy{index}")
        os.remove(os.path.join(copy, name))
        with pytest.raises(error, match=match):
            SilcModel.from_preset(copy)
    SilcModel.from_preset(os.path.join(tmp_path, "copy0"), load_weights=False)
    with pytest.raises(FileNotFoundError, match="No preset folder at"):
        SilcModel.from_preset(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="Unknown preset 'silc_xxl'.*silc_b16"):
        SilcModel.from_preset("silc_xxl")
    with pytest.raises(ValueError, match="keras-hub preset.*SilcModel.from_keras_hub"):
        SilcModel.from_preset("siglip_base_patch16_224")
    with pytest.raises(TypeError, match="preset must be"):
        SilcModel.from_preset(3)


def test_weights_of_another_architecture_are_refused_naming_both_files(saved, tmp_path):
    _, folder = saved
    wide = _model(_tokenizer("unigram"), vision={"width": 32, "mlp_dim": 64, "output_dim": 16})
    wide.save_to_preset(tmp_path / "wide")
    mixed = _copy(folder, tmp_path, "mixed")
    shutil.copy(tmp_path / "wide" / "model.weights.h5", os.path.join(mixed, "model.weights.h5"))
    with pytest.raises(
        ValueError,
        match=r"model.weights.h5 .* does not fit the model of its config.json: .*"
        r"only in the model: .*\(16, 16\).*only in the file: .*\(32, 32\)",
    ):
        SilcModel.from_preset(mixed)
    with pytest.raises(ValueError, match=r"config.json with the overrides \['text'\]"):
        SilcModel.from_preset(folder, text={"depth": 2})
    # A truncated weights file, and a file that is not a .keras archive.
    truncated = _copy(folder, tmp_path, "truncated")
    weights = os.path.join(truncated, "model.weights.h5")
    with open(weights, "rb") as handle:
        head = handle.read(4096)
    with open(weights, "wb") as handle:
        handle.write(head[:100])
    with pytest.raises(ValueError, match="is not a readable weights file.*truncated"):
        SilcModel.from_preset(truncated)
    with pytest.raises(ValueError, match="is not a .keras file"):
        upgrade_model_file(weights, str(tmp_path / "out.keras"))


def test_a_handle_that_cannot_be_reached_is_explained(monkeypatch):
    # No network here (and none through a closed proxy where there is some).
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with pytest.raises(ValueError, match="Could not fetch 'config.json'.*kaggle://.*network"):
        SilcModel.from_preset("kaggle://someone/silc/keras/silc_tiny")
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="Could not fetch 'config.json'.*hf://.*pass that folder"):
        SilcModel.from_preset("hf://someone/silc_tiny")


def test_a_tokenizer_whose_vocabulary_does_not_fit_the_text_tower_is_refused(saved, tmp_path):
    _, folder = saved
    words = ["[PAD]", "[UNK]", "[EOS]"] + [f"word{i}" for i in range(60)]  # 63 > 48
    big = SilcTokenizer(keras_hub_word_piece(words), 8)
    with pytest.raises(ValueError, match=r"63 tokens.*embeds 48.*'vocabulary_size': 63"):
        SilcModel.from_preset(folder, tokenizer=big)
    # A preset whose tokenizer was swapped by hand for one with a larger vocabulary.
    copy = _copy(folder, tmp_path)
    shutil.rmtree(os.path.join(copy, "assets"))
    for name in ("tokenizer.json", "metadata.json"):
        os.remove(os.path.join(copy, name))
    big._write_preset(copy)
    with open(os.path.join(copy, "tokenizer.json")) as file:
        tokenizer_config = json.load(file)
    with open(os.path.join(copy, "preprocessor.json")) as file:
        preprocessor_config = json.load(file)
    preprocessor_config["config"]["tokenizer"] = tokenizer_config
    with open(os.path.join(copy, "preprocessor.json"), "w") as file:
        json.dump(preprocessor_config, file)
    with pytest.raises(
        ValueError, match=r"tokenizer \(assets/tokenizer/\) does not fit.*63 tokens.*embeds 48"
    ):
        SilcModel.from_preset(copy, load_weights=False)


def keras_hub_word_piece(words):
    import keras_hub

    return keras_hub.tokenizers.WordPieceTokenizer(vocabulary=words)


def test_save_to_preset_is_all_or_nothing_and_does_not_overwrite_by_default(tmp_path):
    model = _model(_tokenizer())
    target = tmp_path / "presets" / "model"
    model.save_to_preset(target)
    with pytest.raises(FileExistsError, match="not empty.*overwrite=True"):
        model.save_to_preset(target)
    (target / "stray.txt").write_text("left from before")
    model.save_to_preset(target, overwrite=True)
    assert _files(target) == LAYOUT | {"assets/tokenizer/vocabulary.txt"}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    model.save_weights = fail
    with pytest.raises(OSError, match="disk full"):
        model.save_to_preset(tmp_path / "presets" / "new")
    with pytest.raises(OSError, match="disk full"):
        model.save_to_preset(target, overwrite=True)
    # No half-written folder, no temporary left behind, the old preset intact.
    assert sorted(os.listdir(tmp_path / "presets")) == ["model"]
    assert _files(target) == LAYOUT | {"assets/tokenizer/vocabulary.txt"}
    SilcModel.from_preset(target)


# ----------------------------------------------------------------- the fixture
def write_fixture():
    """Writes tests/data/silc_preset_tiny/ and its expected numbers (run under jax)."""
    assert keras.backend.backend() == "jax", "write the fixture under KERAS_BACKEND=jax"
    model = _model(_tokenizer("wordpiece"), **FIXTURE_OVERRIDES)
    model.save_to_preset(FIXTURE, overwrite=True)
    np.savez(EXPECTED, **_outputs(model))


if __name__ == "__main__":
    write_fixture()


def test_save_to_preset_refuses_paths_it_cannot_replace_whole(tmp_path, monkeypatch):
    model = SilcModel.from_preset("silc_tiny")
    folder = tmp_path / "kept"
    model.save_to_preset(folder)
    # A truthy string replaced the folder.
    with pytest.raises(ValueError, match="overwrite must be True or False, got 'no'"):
        model.save_to_preset(folder, overwrite="no")
    assert (folder / "config.json").exists()
    monkeypatch.chdir(folder)
    for path in (".", str(tmp_path)):
        with pytest.raises(ValueError, match="is the working folder or holds it"):
            model.save_to_preset(path, overwrite=True)
    with pytest.raises(ValueError, match="needs a folder path, got ''"):
        model.save_to_preset("")
    (tmp_path / "notes").write_text("")
    with pytest.raises(ValueError, match="lies under the file"):
        model.save_to_preset(tmp_path / "notes" / "preset")


def test_a_hand_edited_config_json_gets_the_settings_messages(saved, tmp_path):
    import pathlib

    folder = pathlib.Path(_copy(saved[1], tmp_path))
    config = json.loads((folder / "config.json").read_text())
    broken = {**config, "config": {**config["config"]}}
    broken["config"]["vision"] = {**broken["config"]["vision"], "width": "32"}
    (folder / "config.json").write_text(json.dumps(broken))
    # Keras said "Received: units=32", hiding that the value is a string.
    with pytest.raises(ValueError, match=r"config.json of the preset .*vision.width=\"32\""):
        SilcModel.from_preset(folder)
    (folder / "config.json").write_text(json.dumps({**config, "config": None}))
    with pytest.raises(ValueError, match="it has no 'config' object"):
        SilcModel.from_preset(folder)
