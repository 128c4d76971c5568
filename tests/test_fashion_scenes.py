"""Fashion-MNIST scenes and items: shapes, determinism, splits, masks vs captions, errors.

Numpy only: whatever the Keras backend, these tests exercise the same code.
"""

import importlib
import re

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.backend_independent

# `keras_silc.data.fashion_scenes` the attribute is the function re-exported by the package;
# the module itself (for monkeypatching) comes from importlib.
fs = importlib.import_module("keras_silc.data.fashion_scenes")

CLASSES = fs.FASHION_CLASSES
COLOUR_NAMES = list(fs.COLOURS)
GRID = {phrase: (r, c) for r, row in enumerate(fs.POSITIONS) for c, phrase in enumerate(row)}
# "a red t-shirt at the top left": longest class names first, so "t-shirt" is not "shirt".
PHRASE = re.compile(
    r"\b(?:a|an) ({}) ({}) ({})(?=[,.]| and)".format(
        "|".join(COLOUR_NAMES),
        "|".join(re.escape(c) for c in sorted(CLASSES, key=len, reverse=True)),
        "|".join(sorted(GRID, key=len, reverse=True)),
    )
)


def phrases(caption):
    """[(colour, class index, (row, col))] named in a caption."""
    return [(m[0], CLASSES.index(m[1]), GRID[m[2]]) for m in PHRASE.findall(caption)]


@pytest.fixture(scope="module")
def scenes():
    return fs.fashion_scenes("train", 240, 64, num_captions=3, seed=0)


@pytest.fixture(scope="module")
def black_scenes():
    return fs.fashion_scenes("test", 120, 64, background="black", seed=5)


# ----------------------------------------------------------------------- format
def test_shapes_and_dtypes(scenes):
    assert scenes["image"].shape == (240, 64, 64, 3) and scenes["image"].dtype == np.uint8
    assert scenes["mask"].shape == (240, 64, 64) and scenes["mask"].dtype == np.uint8
    assert scenes["labels"].shape == (240, 10) and scenes["labels"].dtype == np.uint8
    assert scenes["caption"].shape == (240, 3) and scenes["caption"].dtype == object
    assert all(isinstance(c, str) and c.endswith(".") for c in scenes["caption"].ravel())
    assert scenes["mask"].max() <= 10 and set(np.unique(scenes["labels"])) == {0, 1}
    for size in (32, 96):
        one = fs.fashion_scenes("test", 3, size, seed=1)
        assert one["image"].shape == (3, size, size, 3) and one["caption"].shape == (3,)
    empty = fs.fashion_scenes("train", 0, 64)
    assert empty["image"].shape == (0, 64, 64, 3) and empty["labels"].shape == (0, 10)


def test_deterministic_and_prefix_stable(scenes):
    again = fs.fashion_scenes("train", 240, 64, num_captions=3, seed=0)
    for key in scenes:
        np.testing.assert_array_equal(scenes[key], again[key])
    # Fewer scenes are the first scenes of more; the first caption ignores num_captions.
    fewer = fs.fashion_scenes("train", 70, 64, seed=0)
    for key in ("image", "mask", "labels"):
        np.testing.assert_array_equal(fewer[key], scenes[key][:70])
    np.testing.assert_array_equal(fewer["caption"], scenes["caption"][:70, 0])
    for other in (fs.fashion_scenes("train", 70, 64, seed=1), fs.fashion_scenes("test", 70, 64)):
        assert not np.array_equal(other["image"], fewer["image"])
        assert not np.array_equal(other["caption"], fewer["caption"])


def test_each_split_uses_only_its_own_items(monkeypatch):
    real = fs.load_fashion_mnist
    asked = []

    def fake(split="train", data_dir=None):
        # The same pixels, but train items all of classes 0-4 and test items of 5-9.
        asked.append(split)
        images, labels = real(split, data_dir)
        return images, labels % 5 + (0 if split == "train" else 5)

    monkeypatch.setattr(fs, "load_fashion_mnist", fake)
    train = fs.fashion_scenes("train", 40, 64, min_items=2, max_items=4)
    test = fs.fashion_scenes("test", 40, 64, min_items=2, max_items=4)
    assert train["labels"][:, 5:].sum() == 0 and train["labels"][:, :5].sum() > 0
    assert test["labels"][:, :5].sum() == 0 and test["labels"][:, 5:].sum() > 0
    assert train["mask"].max() <= 5 and test["mask"][test["mask"] > 0].min() >= 6
    assert set(fs.fashion_items("test", 50, 32)["label"]) <= set(range(5, 10))
    assert asked == ["train", "test", "test"]


def test_a_split_with_few_classes(monkeypatch):
    """Distinct-class scenes need max_items classes in the split; one-class scenes need one."""
    real = fs.load_fashion_mnist

    def two_classes(split="train", data_dir=None):
        images, labels = real(split, data_dir)
        return images, labels % 2 + 3  # classes 3 and 4 only

    monkeypatch.setattr(fs, "load_fashion_mnist", two_classes)
    with pytest.raises(ValueError, match="has items of 2 classes.*max_items=4"):
        fs.fashion_scenes("test", 20, 64, max_items=4)
    same = fs.fashion_scenes("test", 40, 64, max_items=4, scene_classes="same")
    assert same["labels"][:, [3, 4]].sum() == 40 and same["labels"].sum() == 40
    two = fs.fashion_scenes("test", 20, 64, max_items=2)["labels"]
    assert two.sum() == two[:, [3, 4]].sum() > 20


# ------------------------------------------------------ masks, labels, captions
def test_masks_labels_and_captions_agree(scenes):
    for mask, labels, captions in zip(
        scenes["mask"], scenes["labels"], scenes["caption"], strict=True
    ):
        in_mask = {int(v) - 1 for v in np.unique(mask) if v}
        assert in_mask == set(np.flatnonzero(labels).tolist())
        named = [phrases(caption) for caption in captions]
        for caption, found in zip(captions, named, strict=True):
            # Every visible item named once, with a colour and a position; nothing else.
            assert sorted(c for _, c, _ in found) == sorted(in_mask), caption
            assert len(found) == caption.count(" at the ") + caption.count(" on the ") + (
                caption.count(" in the ")
            )
        # The phrasings say the same thing, in other orders and templates.
        assert all(sorted(found) == sorted(named[0]) for found in named)
    starts = {caption.split(" ")[0] for caption in scenes["caption"][:, 1:].ravel()}
    assert len(starts) >= 2 and len(set(scenes["caption"][0])) == 3


def test_positions_match_the_visible_centre(scenes):
    checked = 0
    for mask, caption in zip(scenes["mask"][:80], scenes["caption"][:80, 0], strict=True):
        for _, c, cell in phrases(caption):
            ys, xs = np.nonzero(mask == c + 1)
            centre = (min(2, int(3 * ys.mean() / 64)), min(2, int(3 * xs.mean() / 64)))
            assert centre == cell, caption
            checked += 1
    assert checked > 150
    # Literal "left"/"right" (a flip augmentation swaps them), and every grid cell is used.
    cells = {cell for caption in scenes["caption"][:, 0] for _, _, cell in phrases(caption)}
    assert len(cells) == 9


def test_named_colours_are_the_item_colours(black_scenes):
    # On black, an item's pixels are its colour times a shade: the mean pixel points at it.
    palette = np.asarray([fs.COLOURS[name] for name in COLOUR_NAMES])
    palette /= np.linalg.norm(palette, axis=1, keepdims=True)
    checked = 0
    scenes = (black_scenes[key] for key in ("image", "mask", "caption"))
    for image, mask, caption in zip(*scenes, strict=True):
        for colour, c, _ in phrases(caption):
            mean = image[mask == c + 1].astype(np.float64).mean(axis=0)
            assert COLOUR_NAMES[int(np.argmax(palette @ mean))] == colour, caption
            checked += 1
    assert checked > 200
    assert np.all(black_scenes["image"][black_scenes["mask"] == 0].mean(axis=0) < 40)


def test_scenes_are_a_real_segmentation_test(scenes):
    foreground = (scenes["mask"] > 0).mean(axis=(1, 2))
    per_image = scenes["labels"].sum(axis=1)
    assert foreground.mean() < 0.3 and foreground.max() < 0.6
    assert per_image.mean() >= 2.5 and (per_image >= 2).mean() > 0.95 and per_image.max() <= 4
    # Items are small: each class region fits in half the canvas side.
    for mask in scenes["mask"][:40]:
        for c in np.unique(mask)[1:]:
            ys, xs = np.nonzero(mask == c)
            assert np.ptp(ys) < 32 and np.ptp(xs) < 32
    # The noise background is neither black nor one flat colour.
    background = scenes["image"][:20][scenes["mask"][:20] == 0].astype(np.float64)
    assert 10 < background.mean() < 90 and background.std(axis=0).min() > 8


def test_scenes_of_one_class():
    """scene_classes="same": several items, all of one class, each named in the caption."""
    same = fs.fashion_scenes("train", 200, 64, seed=3, scene_classes="same")
    assert np.all(same["labels"].sum(axis=1) == 1)  # also where some slots are off
    named = []
    for mask, labels, caption in zip(same["mask"], same["labels"], same["caption"], strict=True):
        c = int(np.argmax(labels))
        assert set(np.unique(mask).tolist()) == {0, c + 1}
        found = phrases(caption)
        assert found and all(k == c for _, k, _ in found), caption
        named.append(len(found))
    assert np.mean(named) >= 2.5 and max(named) <= 4
    assert len({int(np.argmax(labels)) for labels in same["labels"]}) == len(CLASSES)
    # The same geometry as the default scenes: only the classes (and so the items) differ.
    distinct = fs.fashion_scenes("train", 200, 64, seed=3)
    assert abs((same["mask"] > 0).mean() - (distinct["mask"] > 0).mean()) < 0.02
    assert abs(np.mean(named) - distinct["labels"].sum(axis=1).mean()) < 0.2


def test_items_for_zero_shot_classification():
    images, labels = fs.load_fashion_mnist("test")
    everything = fs.fashion_items("test", image_size=32)
    assert everything["image"].shape == (10000, 32, 32, 3)
    assert everything["image"].dtype == np.uint8 and everything["label"].dtype == np.int64
    np.testing.assert_array_equal(everything["label"], labels)
    sample = fs.fashion_items("test", 64, 64, seed=3)
    again = fs.fashion_items("test", 64, 64, seed=3)
    np.testing.assert_array_equal(sample["image"], again["image"])
    assert sample["image"].shape == (64, 64, 64, 3) and len(set(sample["label"])) > 5
    # Large items: a bright area covering a good part of the canvas.
    bright = (sample["image"].max(axis=3) > 100).mean(axis=(1, 2))
    assert 0.1 < bright.mean() < 0.7
    assert not np.array_equal(fs.fashion_items("test", 64, 64, seed=4)["label"], sample["label"])


# ----------------------------------------------------------------------- loading
def test_loader_finds_the_files_where_it_is_told(tmp_path, monkeypatch):
    images, labels = fs.load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert not images.flags.writeable  # the cached arrays are shared
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).symlink_to(f"{fs._DEBIAN_DIR}/{name}")
    monkeypatch.setattr(fs, "_DEBIAN_DIR", str(tmp_path / "nothing"))
    monkeypatch.setenv("KERAS_SILC_FASHION_MNIST", str(tmp_path))
    fs.load_fashion_mnist.cache_clear()
    try:
        np.testing.assert_array_equal(fs.load_fashion_mnist("test")[1], labels)
        np.testing.assert_array_equal(fs.load_fashion_mnist("test", tmp_path)[0], images)
    finally:
        fs.load_fashion_mnist.cache_clear()


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    given, env, debian, home = (tmp_path / d for d in ("given", "env", "debian", "home"))
    given.mkdir()  # a data_dir that exists but lacks the files (a missing one is refused)
    monkeypatch.setenv("KERAS_SILC_FASHION_MNIST", str(env))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setattr(fs, "_DEBIAN_DIR", str(debian))

    def offline():
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    fs.load_fashion_mnist.cache_clear()
    try:
        with pytest.raises(FileNotFoundError) as error:
            fs.load_fashion_mnist("train", str(given))
    finally:
        fs.load_fashion_mnist.cache_clear()
    message = str(error.value)
    for place in (given, env, debian, home / ".keras" / "datasets" / "fashion-mnist"):
        assert str(place) in message
    for hint in ("dataset-fashion-mnist", "KERAS_SILC_FASHION_MNIST", "load_data", "no network"):
        assert hint in message


def test_optional_disk_cache(tmp_path):
    made = fs.fashion_scenes("test", 5, 32, num_captions=2, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    loaded = fs.fashion_scenes("test", 5, 32, num_captions=2, cache_dir=tmp_path)
    for key in made:
        np.testing.assert_array_equal(made[key], loaded[key])
    assert loaded["caption"].dtype == object


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"split": "val"}, "split must be 'train' or 'test'"),
        ({"image_size": 16}, "at least 8 px"),
        ({"min_items": 4, "max_items": 2}, "min_items <= max_items"),
        ({"min_items": 0}, "1 <= min_items"),
        ({"max_items": 11}, "max_items <= 10"),
        ({"item_size_range": (0.5, 0.25)}, "0 < min <= max <= 1"),
        ({"item_size_range": (0.2, 1.5)}, "0 < min <= max <= 1"),
        ({"item_size_range": 0.3}, "item_size_range must be"),
        ({"num_captions": 0}, "num_captions"),
        ({"num_scenes": -1}, "num_scenes"),
        ({"background": "white"}, "background must be one of"),
        ({"scene_classes": "mixed"}, "scene_classes must be one of"),
    ],
)
def test_bad_arguments_say_what_is_allowed(arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        fs.fashion_scenes(**{"num_scenes": 2, **arguments})
    if "split" in arguments:
        with pytest.raises(ValueError, match="split"):
            fs.fashion_items("val")
        with pytest.raises(ValueError, match="split"):
            fs.load_fashion_mnist("validation")


def test_class_only_captions_drop_the_colour_and_position_shortcut():
    full = fs.fashion_scenes("train", 64, 64, seed=5)
    plain = fs.fashion_scenes("train", 64, 64, seed=5, class_only_captions=1.0)
    np.testing.assert_array_equal(plain["image"], full["image"])
    np.testing.assert_array_equal(plain["mask"], full["mask"])
    for caption, labels in zip(plain["caption"], plain["labels"], strict=True):
        items = re.split(r", | and ", caption.removesuffix("."))
        named = {re.sub(r"^an? ", "", item) for item in items}
        # Only "a/an <class>" phrases: no colour, no position.
        assert named == {CLASSES[c] for c in np.flatnonzero(labels)}, caption
    half = fs.fashion_scenes("train", 64, 64, seed=5, class_only_captions=0.5)
    changed = np.mean([a != b for a, b in zip(half["caption"], full["caption"], strict=True)])
    assert 0.25 < changed < 0.75
    with pytest.raises(ValueError, match="class_only_captions"):
        fs.fashion_scenes("train", 4, 64, class_only_captions=1.5)


def test_a_data_dir_that_is_not_a_folder_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_dir .*missing' is not a folder"):
        fs.load_fashion_mnist("test", data_dir=tmp_path / "missing")
