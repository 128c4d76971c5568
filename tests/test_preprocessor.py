"""SilcPreprocessor: the batch contract, attached to the model, saved with it; the import
arrows between the library's subpackages."""

import ast
import os
import warnings

import keras
import numpy as np
import pytest
from conftest import tiny_model

import keras_silc
from keras_silc import SilcModel
from keras_silc import SilcPreprocessor
from keras_silc import data

CAPTIONS = ["a red bag at the top left", "a blue shoe", "two shirts on the right", "a coat"]
PACKAGE = os.path.dirname(keras_silc.__file__)


def _tokenizer():
    return data.SilcTokenizer.from_captions(CAPTIONS * 4, 40, 16, model_type="wordpiece")


def test_from_preset_attaches_a_preprocessor_with_the_models_geometry_and_views():
    silc = tiny_model()
    assert isinstance(silc.preprocessor, SilcPreprocessor)
    assert (silc.preprocessor.image_size, silc.preprocessor.patch_size) == (32, 8)
    assert silc.preprocessor.views == ("image", "global_crops", "local_crops")
    clip = tiny_model(multi_view_contrastive=False, ema_teacher=False, self_distillation=False)
    assert clip.preprocessor.views == ("image",)
    config = clip.preprocessor.multi_crop_config()
    assert (config.num_global_crops, config.num_local_crops) == (0, 0)
    assert silc.preprocessor.vocabulary_size == silc.text_encoder.vocabulary_size
    assert silc.preprocessor.max_length == silc.text_encoder.max_length


def test_config_round_trip_keeps_every_argument():
    preprocessor = SilcPreprocessor(
        image_size=64,
        patch_size=8,
        num_global_crops=3,
        num_local_crops=5,
        local_crop_size=24,
        views=("image", "local_crops"),
        vocabulary_size=100,
        max_length=12,
        augmentation={"hue": 0.0, "photometric": "accelerator"},
    )
    config = preprocessor.get_config()
    assert SilcPreprocessor.from_config(config).get_config() == config


def test_a_saved_color_jitter_option_loads_without_it_and_a_new_one_is_refused():
    # Preprocessors saved before the option was removed carry it in their augmentation.
    config = SilcPreprocessor(vocabulary_size=100, max_length=12).get_config()
    for value, warned in (("exact", True), ("fused", False)):
        config["augmentation"] = {"hue": 0.0, "color_jitter": value}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = SilcPreprocessor.from_config(config)
        assert loaded.augmentation == {"hue": 0.0}
        messages = [str(w.message) for w in caught if "color_jitter" in str(w.message)]
        assert len(messages) == warned and all("color_jitter='exact'" in m for m in messages)
    with pytest.raises(ValueError, match="color_jitter='exact'.*removed"):
        SilcPreprocessor(vocabulary_size=100, max_length=12, augmentation={"color_jitter": "exact"})


def test_example_batch_passes_its_own_validation_and_bad_batches_name_the_key():
    preprocessor = tiny_model().preprocessor
    batch = preprocessor.example_batch(3, seed=1)
    preprocessor.validate_batch(batch)
    assert batch["local_crops"].shape == (3, 4, 16, 16, 3)
    with pytest.raises(ValueError, match="local_crops.*expected \\(B, L, s, s, 3\\).*s=16"):
        preprocessor.validate_batch({**batch, "local_crops": batch["local_crops"][:, :, :8, :8]})
    with pytest.raises(ValueError, match="missing \\['text'\\]"):
        preprocessor.validate_batch({k: v for k, v in batch.items() if k != "text"})
    with pytest.raises(ValueError, match="dtype uint8.*divide uint8 images by 255"):
        preprocessor.validate_batch({**batch, "image": (batch["image"] * 255).astype(np.uint8)})


def test_bad_geometry_and_a_tokenizer_that_does_not_fit_fail_when_built():
    with pytest.raises(ValueError, match="local_crop_size=12 must be a positive multiple"):
        tiny_model(local_crop_size=12)
    with pytest.raises(ValueError, match="views must include 'image'"):
        SilcPreprocessor(views=("global_crops", "tiles"))
    tokenizer = _tokenizer()
    with pytest.raises(ValueError, match=f"has {tokenizer.vocabulary_size} tokens"):
        tiny_model(text={"vocabulary_size": 8}, tokenizer=tokenizer)


def test_local_crops_larger_than_the_image_are_warned_about():
    with pytest.warns(UserWarning, match="local_crop_size=96 is larger than image_size=32"):
        SilcPreprocessor(image_size=32, patch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SilcPreprocessor(image_size=32, patch_size=8, local_crop_size=16)
        SilcPreprocessor(image_size=32, patch_size=8, views=("image", "global_crops"))


def test_training_dataset_takes_the_preprocessor_and_makes_valid_batches():
    tokenizer = _tokenizer()
    model = tiny_model(text={"vocabulary_size": 64}, tokenizer=tokenizer)
    images = np.random.default_rng(0).integers(0, 256, (8, 40, 40, 3), dtype=np.uint8)
    pairs = data.from_arrays(images, CAPTIONS * 2)
    batch = next(data.training_dataset(pairs, model.preprocessor, 4, seed=0).as_numpy_iterator())
    model.preprocessor.validate_batch(batch)
    np.testing.assert_array_equal(batch["text"][0] > 0, batch["text"][0] != 0)
    with pytest.raises(TypeError, match="SilcPreprocessor"):
        data.training_dataset(pairs, "not a preprocessor", 4)
    # A misspelt augmentation setting names itself, the likely fix and the settings.
    message = r"'local_scal' \(did you mean 'local_scale'\?\)\. The settings are .*solarize"
    with pytest.raises(ValueError, match=message):
        data.training_dataset(pairs, model.preprocessor, 4, augmentation={"local_scal": (0.1, 0.3)})
    with pytest.raises(ValueError, match="'blur_sigmas' \\(did you mean 'blur_sigma'"):
        SilcPreprocessor(vocabulary_size=100, max_length=12, augmentation={"blur_sigmas": (1, 2)})


def test_a_saved_model_carries_its_preprocessor_and_tokenizer(tmp_path):
    tokenizer = _tokenizer()
    model = tiny_model(
        text={"vocabulary_size": 64}, tokenizer=tokenizer, num_local_crops=2, local_crop_size=24
    )
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert reloaded.preprocessor.get_config() == model.preprocessor.get_config()
    np.testing.assert_array_equal(
        reloaded.preprocessor.tokenize(CAPTIONS), model.preprocessor.tokenize(CAPTIONS)
    )
    assert reloaded.tokenizer is reloaded.preprocessor.tokenizer


def test_a_model_without_a_preprocessor_still_trains_on_batches():
    model = SilcModel.from_config(
        {key: value for key, value in tiny_model().get_config().items() if key != "preprocessor"}
    )
    assert model.preprocessor is None and model.tokenizer is None
    batch = tiny_model().preprocessor.example_batch(4)
    model.compile()
    history = model.fit(batch, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


def _imports(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def _subpackage_imports(subpackage):
    folder = os.path.join(PACKAGE, subpackage)
    files = [folder + ".py"] if os.path.isfile(folder + ".py") else []
    if os.path.isdir(folder):
        files = [os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".py")]
    return {module for path in files for module in _imports(path)}


@pytest.mark.parametrize(
    "subpackage, forbidden",
    [
        ("models", ("keras_silc.data", "keras_silc.experiments", "keras_silc.cli")),
        ("data", ("keras_silc.models", "keras_silc.experiments", "keras_silc.cli")),
        ("evaluation", ("keras_silc.experiments", "keras_silc.cli", "keras_silc.training")),
        ("layers", ("keras_silc.models", "keras_silc.data", "keras_silc.experiments")),
        ("losses", ("keras_silc.models", "keras_silc.data", "keras_silc.experiments")),
        ("batch_format", ("keras_silc.models", "keras_silc.data", "keras_silc.layers")),
    ],
)
def test_imports_point_one_way(subpackage, forbidden):
    bad = sorted(
        module
        for module in _subpackage_imports(subpackage)
        if any(module == name or module.startswith(name + ".") for name in forbidden)
    )
    assert not bad, f"keras_silc/{subpackage} imports {bad}"


def test_a_keras_silc_0_1_file_is_refused_with_the_fix_and_loads_once_upgraded(tmp_path):
    """tests/data/keras_silc_0_1.keras was saved by commit dc78b3b (the tokenizer inside the
    model); its ids and text embeddings then are in keras_silc_0_1_expected.npz."""
    folder = os.path.join(os.path.dirname(__file__), "data")
    old = os.path.join(folder, "keras_silc_0_1.keras")
    with pytest.raises(ValueError, match="keras_silc 0.1.*upgrade_model_file"):
        keras.models.load_model(old)
    new = keras_silc.models.upgrade_model_file(old, str(tmp_path / "upgraded.keras"))
    model = keras.models.load_model(new)
    expected = np.load(os.path.join(folder, "keras_silc_0_1_expected.npz"))
    ids = model.preprocessor.tokenize(CAPTIONS)
    np.testing.assert_array_equal(ids, expected["ids"])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.encode_text(ids)), expected["text_embeddings"], atol=1e-5
    )
    assert model.preprocessor.num_local_crops == 4
