"""Fashion-MNIST scenes: a real, offline image-caption-mask dataset for SILC.

Each scene puts several real Fashion-MNIST items (distinct classes, each 25-50% of the canvas
side by default) at random positions and in random named colours on a dim, noisy background.
Its caption names every visible item with its colour, class and position in a 3 x 3 grid
("a red sneaker at the top left, a blue bag on the right and a white dress at the bottom."),
and its mask gives every pixel's class (0 = background, c + 1 = `FASHION_CLASSES[c]`). Train
scenes use only the train split's 60k items and evaluation scenes only the test split's 10k;
everything is a function of the arguments and the seed.

What it tests: zero-shot classification (`fashion_items`: one large item per image), retrieval
(captions that differ in class, colour and position), and zero-shot segmentation (small items,
several classes per image), at 32-256 px on a CPU.

The images come from Debian's `dataset-fashion-mnist` package, the Keras cache, or
`keras.datasets.fashion_mnist` where there is network.
"""

import functools
import gzip
import os

import numpy as np

FASHION_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)

COLOURS = {
    "red": (0.92, 0.14, 0.14),
    "green": (0.18, 0.78, 0.2),
    "blue": (0.2, 0.36, 1.0),
    "yellow": (0.96, 0.9, 0.16),
    "white": (0.96, 0.96, 0.96),
    "orange": (1.0, 0.55, 0.08),
    "purple": (0.66, 0.24, 0.92),
    "cyan": (0.16, 0.9, 0.92),
}

# Rows then columns of the 3 x 3 grid of item centres.
POSITIONS = (
    ("at the top left", "at the top", "at the top right"),
    ("on the left", "in the center", "on the right"),
    ("at the bottom left", "at the bottom", "at the bottom right"),
)

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_SPLIT_SEEDS = {"train": 0, "test": 1}
_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
# An item pixel belongs to the item's class above this intensity (of 1).
_MASK_THRESHOLD = 0.2


def _check_split(split):
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")


def _read_idx(path):
    with gzip.open(path, "rb") as handle:
        payload = handle.read()
    dims = payload[3]
    shape = tuple(int.from_bytes(payload[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(payload, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _search_dirs(data_dir):
    dirs = [data_dir, os.environ.get("KERAS_SILC_FASHION_MNIST"), _DEBIAN_DIR]
    dirs.append(os.path.join(os.path.expanduser("~"), ".keras", "datasets", "fashion-mnist"))
    return [d for d in dirs if d]


@functools.lru_cache(maxsize=4)
def load_fashion_mnist(split="train", data_dir=None):
    """(images uint8 (N, 28, 28), labels int64 (N,)) of a Fashion-MNIST split.

    Looks in `data_dir`, `$KERAS_SILC_FASHION_MNIST`, /usr/share/datasets/fashion-mnist
    (Debian's `dataset-fashion-mnist`) and the Keras cache, then tries
    `keras.datasets.fashion_mnist.load_data()` (which downloads where there is network).
    """
    _check_split(split)
    image_file, label_file = _FILES[split]
    looked = []
    for directory in _search_dirs(data_dir):
        images_path = os.path.join(directory, image_file)
        labels_path = os.path.join(directory, label_file)
        looked.append(directory)
        if os.path.exists(images_path) and os.path.exists(labels_path):
            return _read_idx(images_path), _read_idx(labels_path).astype(np.int64)
    try:
        import keras

        train, test = keras.datasets.fashion_mnist.load_data()
        images, labels = train if split == "train" else test
        return np.asarray(images, np.uint8), np.asarray(labels, np.int64)
    except Exception as error:  # no network, no cache
        raise FileNotFoundError(
            f"Fashion-MNIST ({image_file}, {label_file}) was not found in {looked}, and "
            f"keras.datasets.fashion_mnist.load_data() failed ({type(error).__name__}: "
            f"{error}). Install it with `sudo apt-get install dataset-fashion-mnist`, set "
            "KERAS_SILC_FASHION_MNIST to a folder with the four .gz files, or run "
            "keras.datasets.fashion_mnist.load_data() once where there is network."
        ) from None


@functools.lru_cache(maxsize=256)
def _resize_matrix(size, source=28):
    """(size, source) bilinear resampling matrix with area averaging when shrinking."""
    scale = source / size
    centres = (np.arange(size) + 0.5) * scale - 0.5
    support = max(1.0, scale)
    positions = np.arange(source)
    weights = np.maximum(0.0, 1.0 - np.abs(positions[None, :] - centres[:, None]) / support)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _resize_item(item, size):
    matrix = _resize_matrix(size)
    return matrix @ (item.astype(np.float32) / 255.0) @ matrix.T


def _backgrounds(rng, count, size, style):
    if style == "black":
        return np.zeros((count, size, size, 3), np.float32)
    if style != "noise":
        raise ValueError(f"background must be 'noise' or 'black', got {style!r}.")
    # A dim colour, a soft gradient and pixel noise: not separable from items by colour.
    base = rng.uniform(0.0, 0.25, (count, 1, 1, 3))
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    direction = rng.uniform(-0.12, 0.12, (count, 2, 1, 1, 1))
    gradient = (
        direction[:, 0] * ramp[None, :, None, None] + direction[:, 1] * ramp[None, None, :, None]
    )
    noise = rng.normal(0.0, 0.06, (count, size, size, 3))
    return np.clip(base + gradient + noise, 0.0, 1.0).astype(np.float32)


def _paste(canvas, mask, item, top, left, colour, class_id):
    size = item.shape[0]
    region = canvas[top : top + size, left : left + size]
    alpha = np.clip(item * 1.6, 0.0, 1.0)[..., None]
    shade = (0.35 + 0.65 * item)[..., None] * np.asarray(colour, np.float32)
    region[:] = (1.0 - alpha) * region + alpha * shade
    mask_region = mask[top : top + size, left : left + size]
    mask_region[item > _MASK_THRESHOLD] = class_id + 1


def _overlap(box, boxes):
    top, left, size = box
    worst = 0.0
    for other_top, other_left, other_size in boxes:
        height = min(top + size, other_top + other_size) - max(top, other_top)
        width = min(left + size, other_left + other_size) - max(left, other_left)
        if height > 0 and width > 0:
            worst = max(worst, height * width / min(size, other_size) ** 2)
    return worst


def _join(phrases):
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


_TEMPLATES = ("{}.", "a photo of {}.", "there is {}.", "a picture with {}.")


def _check_arguments(image_size, min_items, max_items, item_size_range):
    low, high = item_size_range
    if not 0 < low <= high <= 1:
        raise ValueError(
            f"item_size_range must be (min, max) fractions of the canvas side with "
            f"0 < min <= max <= 1, got {item_size_range}."
        )
    if not 1 <= min_items <= max_items <= len(FASHION_CLASSES):
        raise ValueError(
            f"Need 1 <= min_items <= max_items <= {len(FASHION_CLASSES)}, got min_items="
            f"{min_items}, max_items={max_items}."
        )
    if int(low * image_size) < 8:
        raise ValueError(
            f"image_size={image_size} makes the smallest items {int(low * image_size)} px; "
            "items need at least 8 px: use image_size >= 32 or a larger item_size_range."
        )


def _cache_path(cache_dir, name, arguments):
    if cache_dir is None:
        cache_dir = os.environ.get(
            "KERAS_SILC_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "keras_silc")
        )
    if not cache_dir:
        return None
    key = "-".join(str(v).replace(" ", "") for v in arguments)
    return os.path.join(cache_dir, f"{name}-v1-{key}.npz")


def _cached(name, arguments, cache_dir, make):
    """Scenes are a pure function of their arguments: keep them on disk between runs."""
    path = _cache_path(cache_dir, name, arguments)
    if path and os.path.exists(path):
        with np.load(path, allow_pickle=True) as stored:
            return {key: stored[key] for key in stored.files}
    result = make()
    if path:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temporary = path + f".{os.getpid()}.tmp.npz"
            np.savez(temporary, **result)
            os.replace(temporary, path)
        except OSError:
            pass  # a read-only home only costs the regeneration
    return result


def fashion_scenes(
    split="train",
    num_scenes=1000,
    image_size=64,
    min_items=2,
    max_items=4,
    item_size_range=(0.25, 0.5),
    num_captions=1,
    background="noise",
    seed=0,
    data_dir=None,
    cache_dir=None,
):
    """Scenes of several coloured Fashion-MNIST items, with captions and class masks.

    Generated scenes are cached as .npz under `cache_dir` (default $KERAS_SILC_CACHE or
    ~/.cache/keras_silc; "" turns the cache off).

    Returns a dict of numpy arrays:
        image: (N, S, S, 3) uint8;
        caption: (N,) str, or (N, num_captions) differently phrased captions;
        mask: (N, S, S) uint8, 0 = background, c + 1 = FASHION_CLASSES[c];
        labels: (N, 10) uint8 multi-hot of the classes visible in the scene.
    """
    _check_split(split)
    _check_arguments(image_size, min_items, max_items, item_size_range)
    if num_captions < 1:
        raise ValueError(f"num_captions must be at least 1, got {num_captions}.")
    arguments = (
        split,
        num_scenes,
        image_size,
        min_items,
        max_items,
        item_size_range,
        num_captions,
        background,
        seed,
    )
    return _cached(
        "scenes",
        arguments,
        cache_dir,
        lambda: _make_scenes(*arguments, data_dir=data_dir),
    )


def _make_scenes(
    split,
    num_scenes,
    image_size,
    min_items,
    max_items,
    item_size_range,
    num_captions,
    background,
    seed,
    data_dir,
):
    items, item_labels = load_fashion_mnist(split, data_dir)
    by_class = [np.flatnonzero(item_labels == c) for c in range(len(FASHION_CLASSES))]
    rng = np.random.default_rng([seed, _SPLIT_SEEDS[split], 1])
    colour_names = list(COLOURS)
    images = _backgrounds(rng, num_scenes, image_size, background)
    masks = np.zeros((num_scenes, image_size, image_size), np.uint8)
    captions = np.empty((num_scenes, num_captions), dtype=object)
    labels = np.zeros((num_scenes, len(FASHION_CLASSES)), np.uint8)
    min_visible = max(4, image_size * image_size // 512)
    low, high = (int(round(f * image_size)) for f in item_size_range)

    for n in range(num_scenes):
        count = rng.integers(min_items, max_items + 1)
        classes = rng.choice(len(FASHION_CLASSES), size=count, replace=False)
        boxes, placed = [], []
        for class_id in classes:
            size = int(rng.integers(low, high + 1))
            # Few tries for a spot that overlaps the others by at most a quarter.
            for _ in range(8):
                box = (
                    int(rng.integers(0, image_size - size + 1)),
                    int(rng.integers(0, image_size - size + 1)),
                    size,
                )
                if _overlap(box, boxes) <= 0.25:
                    break
            boxes.append(box)
            item = items[rng.choice(by_class[class_id])]
            colour = colour_names[rng.integers(len(colour_names))]
            _paste(
                images[n], masks[n], _resize_item(item, size), *box[:2], COLOURS[colour], class_id
            )
            placed.append((class_id, colour))

        phrases = []
        for class_id, colour in placed:
            ys, xs = np.nonzero(masks[n] == class_id + 1)
            if len(ys) < min_visible:  # hidden behind later items
                masks[n][masks[n] == class_id + 1] = 0
                continue
            row = min(2, int(3 * ys.mean() / image_size))
            col = min(2, int(3 * xs.mean() / image_size))
            labels[n, class_id] = 1
            article = "an" if colour[0] in "aeiou" else "a"
            phrases.append(f"{article} {colour} {FASHION_CLASSES[class_id]} {POSITIONS[row][col]}")
        for c in range(num_captions):
            order = rng.permutation(len(phrases))
            text = _join([phrases[i] for i in order])
            template = _TEMPLATES[0] if c == 0 else _TEMPLATES[1 + (c - 1) % 3]
            captions[n, c] = template.format(text)

    captions = captions.astype(str)
    return {
        "image": np.round(images * 255).astype(np.uint8),
        "caption": captions[:, 0] if num_captions == 1 else captions,
        "mask": masks,
        "labels": labels,
    }


def fashion_items(split="test", num_items=None, image_size=64, seed=0, data_dir=None):
    """One coloured item per image (50-90% of the side), for zero-shot classification.

    Returns {"image": (N, S, S, 3) uint8, "label": (N,) int64}; `num_items=None` takes the
    whole split, in order; otherwise a seeded sample.
    """
    _check_split(split)
    _check_arguments(image_size, 1, 1, (0.5, 0.9))
    items, item_labels = load_fashion_mnist(split, data_dir)
    rng = np.random.default_rng([seed, _SPLIT_SEEDS[split], 2])
    if num_items is None:
        chosen = np.arange(len(items))
    else:
        chosen = rng.choice(len(items), size=num_items, replace=num_items > len(items))
    images = _backgrounds(rng, len(chosen), image_size, "noise")
    scratch = np.zeros((image_size, image_size), np.uint8)
    colour_names = list(COLOURS)
    for n, index in enumerate(chosen):
        size = int(rng.integers(int(0.5 * image_size), int(0.9 * image_size) + 1))
        top, left = (int(v) for v in rng.integers(0, image_size - size + 1, size=2))
        colour = COLOURS[colour_names[rng.integers(len(colour_names))]]
        _paste(images[n], scratch, _resize_item(items[index], size), top, left, colour, 0)
    return {
        "image": np.round(images * 255).astype(np.uint8),
        "label": item_labels[chosen].astype(np.int64),
    }
