"""Fashion-MNIST scenes: a real, offline image-caption-mask dataset for SILC.

`fashion_scenes` puts several real Fashion-MNIST items (of distinct classes, or with
`scene_classes="same"` all of one class; each 25-50% of the canvas side by default) at random
positions and in random named colours on a dim, noisy background. Its caption names every
visible item with its colour, class and position in a 3 x 3 grid of the canvas ("a red sneaker
at the top left, a blue bag on the right and a white dress at the bottom."), its mask gives
every pixel's class (0 = background, c + 1 = `FASHION_CLASSES[c]`) and its labels say which
classes are visible. `fashion_items` is a plain zero-shot classification set: one large
coloured item per image.

Why these choices:
  * train scenes draw only on the train split's 60k items and evaluation scenes only on the
    test split's 10k, so evaluation items are unseen;
  * items are small and of different classes, so a model must localise to segment, and
    captions differ in class, colour and position, so retrieval needs all three;
  * the background is dim pixel noise over soft blotches of random hue, not a flat colour to
    key out, and items are shaded by their own intensity (texture kept) and blended with it
    as alpha; items stay brighter than the background, so they are legible at 32-64 px;
  * positions use the literal words "left" and "right" so that a horizontal flip augmentation
    can swap them in the caption.

Everything is a deterministic function of the arguments (a numpy Generator seeded from `seed`
and `split`) and is generated in vectorised chunks with numpy only: 10k scenes of 64 px take a
few seconds on one core. Scenes are prefix-stable: the first n scenes of a larger
set equal a set of n scenes with the same arguments.

The images come from Debian's `dataset-fashion-mnist` package (/usr/share/datasets/
fashion-mnist), `$KERAS_SILC_FASHION_MNIST`, the Keras cache, or
`keras.datasets.fashion_mnist.load_data()` where there is network.
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

# Saturated, well separated hues (plus white): distinguishable at 64 px after shading.
COLOURS = {
    "red": (0.95, 0.12, 0.12),
    "green": (0.15, 0.8, 0.15),
    "blue": (0.18, 0.35, 1.0),
    "yellow": (0.97, 0.92, 0.1),
    "white": (0.97, 0.97, 0.97),
    "orange": (1.0, 0.52, 0.0),
    "purple": (0.65, 0.2, 0.95),
    "cyan": (0.1, 0.9, 0.95),
}

# Phrases for the 3 x 3 grid of an item's (visible) centre, rows then columns.
POSITIONS = (
    ("at the top left", "at the top", "at the top right"),
    ("on the left", "in the center", "on the right"),
    ("at the bottom left", "at the bottom", "at the bottom right"),
)

# Caption k of a scene uses template k (cycling) and its own random order of the items.
_TEMPLATES = (
    "{items}.",
    "a photo of {items}.",
    "there {verb} {items}.",
    "an image of {items}.",
    "a picture with {items}.",
)

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_SPLIT_IDS = {"train": 0, "test": 1}
_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_BACKGROUNDS = ("noise", "black")
_SCENE_CLASSES = ("distinct", "same")
# An item pixel belongs to the item's class where its resized intensity (of 1) is above this.
_MASK_THRESHOLD = 0.2
# Smallest item side: Fashion-MNIST items are unrecognisable below this.
_MIN_ITEM_PX = 8
# Placement: candidate positions per item, and the most a pair of boxes may overlap
# (intersection over the smaller box's area).
_TRIES = 12
_MAX_OVERLAP = 0.25
# An item covered by later ones is dropped (not drawn, captioned or labelled) unless this
# fraction of its foreground stays visible.
_MIN_VISIBLE = 0.3
# Bump when generation changes: keys the optional .npz cache.
_VERSION = 3


# ------------------------------------------------------------------------- loading
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
    home = os.path.expanduser("~")
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(home, ".keras")
    dirs = [
        data_dir,
        os.environ.get("KERAS_SILC_FASHION_MNIST"),
        _DEBIAN_DIR,
        os.path.join(keras_home, "datasets", "fashion-mnist"),
    ]
    return [str(d) for i, d in enumerate(dirs) if d and d not in dirs[:i]]


def load_fashion_mnist(split="train", data_dir=None):
    """(images uint8 (N, 28, 28), labels int64 (N,)) of a Fashion-MNIST split.

    `split` is "train" (60k) or "test" (10k). Looks for the four idx .gz files in `data_dir`,
    `$KERAS_SILC_FASHION_MNIST`, /usr/share/datasets/fashion-mnist (Debian's
    `dataset-fashion-mnist`) and the Keras cache (~/.keras/datasets/fashion-mnist), then
    tries `keras.datasets.fashion_mnist.load_data()`, which downloads where there is network.
    The arrays are cached in-process and read-only.
    """
    _check_split(split)
    if data_dir is not None and not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"data_dir {os.fspath(data_dir)!r} is not a folder; pass the folder that holds the "
            "four Fashion-MNIST .gz files, or None to search the usual places."
        )
    return _load_fashion_mnist(split, None if data_dir is None else os.fspath(data_dir))


@functools.lru_cache(maxsize=4)
def _load_fashion_mnist(split, data_dir):
    image_file, label_file = _FILES[split]
    looked = []
    for directory in _search_dirs(data_dir):
        images_path = os.path.join(directory, image_file)
        labels_path = os.path.join(directory, label_file)
        looked.append(directory)
        if os.path.isfile(images_path) and os.path.isfile(labels_path):
            return _read_only(_read_idx(images_path), _read_idx(labels_path))
    try:
        import keras

        train, test = keras.datasets.fashion_mnist.load_data()
        return _read_only(*(train if split == "train" else test))
    except Exception as error:  # no network and no cache: say how to get the data
        places = "\n".join(f"  {d}/" for d in looked)
        raise FileNotFoundError(
            f"Fashion-MNIST {split} split ({image_file}, {label_file}) not found. Looked in:\n"
            f"{places}\n  keras.datasets.fashion_mnist.load_data() (failed: "
            f"{type(error).__name__}: {error})\n"
            "Get it with `sudo apt-get install dataset-fashion-mnist`, or set "
            "KERAS_SILC_FASHION_MNIST (or pass data_dir) to a folder with the four .gz files, "
            "or run keras.datasets.fashion_mnist.load_data() once where there is network."
        ) from None


load_fashion_mnist.cache_clear = _load_fashion_mnist.cache_clear


def _read_only(images, labels):
    images = np.asarray(images, np.uint8)
    labels = np.asarray(labels, np.int64).copy()
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(
            f"Fashion-MNIST arrays have shapes {images.shape} and {labels.shape}; expected "
            "(N, 28, 28) and (N,)."
        )
    # Callers share the cached arrays: keep them from being changed in place.
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


# ----------------------------------------------------------------------- rendering
# Random draws come in fixed blocks of scenes, each from its own Generator, so scene i never
# depends on how many scenes are asked for (sets are prefix-stable) nor on how the rendering
# is chunked.
_PARAMETER_BLOCK = 1024
_NOISE_BLOCK = 64


def _generator(seed, split, stream, block):
    return np.random.default_rng([seed, _SPLIT_IDS[split], stream, block])


def _blocks(count, draw):
    """draw(block) -> dict of arrays for `_PARAMETER_BLOCK` scenes; cut to `count` scenes."""
    parts = [draw(block) for block in range(max(1, -(-count // _PARAMETER_BLOCK)))]
    return {key: np.concatenate([p[key] for p in parts])[:count] for key in parts[0]}


@functools.lru_cache(maxsize=512)
def _resize_matrix(size, source=28):
    """(size, source) resampling matrix: bilinear when enlarging, area-like when shrinking."""
    scale = source / size
    centres = (np.arange(size) + 0.5) * scale - 0.5
    support = max(1.0, scale)
    positions = np.arange(source)
    weights = np.maximum(0.0, 1.0 - np.abs(positions[None, :] - centres[:, None]) / support)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _window_matrices(smallest, largest):
    """(sizes, 2 * largest, 28): rows largest..largest + s of entry s - smallest resize 28 px
    to s px, the other rows are zero. Rows o..o + largest of it place an item of s px at
    offset `largest - o` inside a `largest` px window (see `_draw`)."""
    matrices = np.zeros((largest - smallest + 1, 2 * largest, 28), np.float32)
    for size in range(smallest, largest + 1):
        matrices[size - smallest, largest : largest + size] = _resize_matrix(size)
    return matrices


def _backgrounds(key, first, images, style):
    """Write the backgrounds of scenes first.. into uint8 `images` (first a block start)."""
    count, size = images.shape[:2]
    if style == "black":
        images[:] = 0
        return
    # A dim colour with soft blotches of random hue (a 4 x 4 grid of colours upsampled
    # bilinearly to one value per 4 x 4 pixels, a step hidden by the noise) and pixel noise:
    # not a flat colour that could be keyed out. All in uint8 levels, ~4x cheaper than float:
    # blotches of 0..61 levels less the noise's mean, plus noise of 0..31 (std 0.036).
    cells = -(-size // 4)
    up = _resize_matrix(cells, 4)
    up = np.einsum("yi,xj->yxij", up, up).reshape(cells * cells, 16)
    for block in range(first // _NOISE_BLOCK, -(-(first + count) // _NOISE_BLOCK)):
        rng = _generator(*key, block)
        coarse = rng.uniform(0.04, 0.2, (_NOISE_BLOCK, 1, 3))
        coarse = (coarse + rng.uniform(-0.1, 0.1, (_NOISE_BLOCK, 16, 3))) * 255 - 15.5
        blotches = np.clip(up @ coarse, 0, 224).astype(np.uint8)
        blotches = blotches.reshape(_NOISE_BLOCK, cells, 1, cells, 1, 3)
        blotches = np.broadcast_to(blotches, (_NOISE_BLOCK, cells, 4, cells, 4, 3))
        blotches = blotches.reshape(_NOISE_BLOCK, 4 * cells, 4 * cells, 3)[:, :size, :size]
        # Raw random bytes are ~20x cheaper than Gaussian noise.
        noise = np.frombuffer(rng.bytes(_NOISE_BLOCK * size * size * 3), np.uint8)
        noise = (noise >> 3).reshape(_NOISE_BLOCK, size, size, 3)
        start = block * _NOISE_BLOCK - first  # where this block's scenes go in `images`
        keep = slice(max(0, -start), min(_NOISE_BLOCK, count - start))
        out = images[start + keep.start : start + keep.stop]
        np.add(blotches[keep], noise[keep], out=out)


def _place(rng, sizes, image_size):
    """Top-left corners (C, K) of square boxes; each slot keeps the first of `_TRIES` random
    candidates that overlaps every earlier box by at most `_MAX_OVERLAP` (else the least)."""
    count, slots = sizes.shape
    tops = np.zeros((count, slots), np.int64)
    lefts = np.zeros((count, slots), np.int64)
    rows = np.arange(count)
    for j in range(slots):
        room = (image_size - sizes[:, j] + 1)[:, None, None]
        candidates = (rng.random((count, _TRIES, 2)) * room).astype(np.int64)
        if j == 0:
            pick = np.zeros(count, np.int64)
        else:
            top, left = candidates[..., :1], candidates[..., 1:]  # (C, T, 1)
            size = sizes[:, j, None, None]
            other_top, other_left = tops[:, None, :j], lefts[:, None, :j]  # (C, 1, j)
            other_size = sizes[:, None, :j]
            height = np.minimum(top + size, other_top + other_size) - np.maximum(top, other_top)
            width = np.minimum(left + size, other_left + other_size)
            width = width - np.maximum(left, other_left)
            shared = np.maximum(height, 0) * np.maximum(width, 0)
            worst = (shared / np.minimum(size, other_size) ** 2).max(axis=2)  # (C, T)
            fits = worst <= _MAX_OVERLAP
            pick = np.where(fits.any(axis=1), fits.argmax(axis=1), worst.argmin(axis=1))
        tops[:, j] = candidates[rows, pick, 0]
        lefts[:, j] = candidates[rows, pick, 1]
    return tops, lefts


def _draw(items, slots, masks, owners, sizes, images=None):
    """Paste items slot by slot (later slots occlude earlier ones).

    `slots` holds (C, K) arrays: "on" (draw it), "item" (index into `items`), "class", "size",
    "top", "left" and "colour" (C, K, 3); `sizes` = (smallest, largest) item side. Writes the
    class masks, the slot (j + 1) that owns each pixel into `owners` (and the uint8 images
    when given) in place. Returns, per slot drawn,
    (slot, scenes, owner, where): the flat mask index `where` of each foreground pixel and
    the index into `scenes` of the item that it belongs to.
    """
    count, image_size = masks.shape[:2]
    window = sizes[1]
    matrices = _window_matrices(*sizes)
    span = np.arange(window)
    # Flat canvas offsets of a window's pixels from its top-left corner.
    offsets = (span[:, None] * image_size + span).ravel()
    flat_masks = masks.reshape(-1)
    flat_owners = owners.reshape(-1)
    if images is not None:
        flat_images = images.reshape(-1, 3)
        # The same pixels as single 3-byte elements: 1-D scatters are ~3x faster.
        flat_rgb = flat_images.view(np.dtype((np.void, 3))).reshape(-1)
    drawn = []
    for j in range(slots["on"].shape[1]):
        scenes = np.flatnonzero(slots["on"][:, j])
        if not len(scenes):
            continue
        # Each item is resized straight into a zero-padded window of the largest item side,
        # pushed inside the canvas, with the item at its own top-left corner: one batched
        # resize per slot whatever the items' sizes.
        top, left = slots["top"][scenes, j], slots["left"][scenes, j]
        window_top = np.minimum(top, image_size - window)
        window_left = np.minimum(left, image_size - window)
        which = (slots["size"][scenes, j] - sizes[0])[:, None]
        rows = matrices[which, window - (top - window_top)[:, None] + span]  # (M, w, 28)
        cols = matrices[which, window - (left - window_left)[:, None] + span]
        pixels = items[slots["item"][scenes, j]].astype(np.float32) * np.float32(1 / 255)
        patch = (rows @ pixels @ cols.transpose(0, 2, 1)).reshape(-1)  # zero off the item
        # Only the item's nonzero pixels are touched.
        inside = np.flatnonzero(patch > (_MASK_THRESHOLD if images is None else 0.0))
        owner = inside // (window * window)
        corner = (scenes * image_size + window_top) * image_size + window_left
        where = corner[owner] + offsets[inside - owner * (window * window)]
        value = patch[inside]
        foreground = value > _MASK_THRESHOLD
        labels = (slots["class"][scenes, j] + 1).astype(np.uint8)
        drawn.append((j, scenes, owner[foreground], where[foreground]))
        flat_masks[drawn[-1][3]] = labels[drawn[-1][2]]
        flat_owners[drawn[-1][3]] = j + 1
        if images is not None:
            # Alpha follows the intensity (anti-aliased edges, the faintest parts let the
            # background through; opaque from 1/3, so overlaps do not mix colours); the
            # colour is shaded by the intensity so the item's texture stays visible but its
            # colour stays nameable (items average 0.6 intensity). Full intensity is the
            # pure named colour. In 0..255 levels: 114.75 + 140.25 = (0.45 + 0.55) * 255.
            alpha = np.minimum(value * 3.0, 1.0)[:, None]
            shade = (114.75 + 140.25 * value)[:, None] * slots["colour"][scenes, j][owner]
            under = np.take(flat_images, where, axis=0).astype(np.float32)
            blended = (under + alpha * (shade - under) + 0.5).astype(np.uint8)
            flat_rgb[where] = blended.view(np.dtype((np.void, 3))).reshape(-1)
    return drawn


def _visible(slots, owners, drawn):
    """Each item's own foreground pixels, and its visible pixels and their sums of rows and
    of columns, (C, K) each."""
    image_size = owners.shape[1]
    flat_owners = owners.reshape(-1)
    area, pixels = (np.zeros(slots["on"].shape, np.int64) for _ in range(2))
    rows, cols = (np.zeros(slots["on"].shape) for _ in range(2))
    for j, scenes, owner, where in drawn:
        area[scenes, j] = np.bincount(owner, minlength=len(scenes))
        # By slot, not class: items of one scene may share a class (scene_classes="same").
        mine = flat_owners[where] == j + 1
        owner, where = owner[mine], where[mine]
        pixels[scenes, j] = np.bincount(owner, minlength=len(scenes))
        rows[scenes, j] = np.bincount(owner, (where // image_size) % image_size, len(scenes))
        cols[scenes, j] = np.bincount(owner, where % image_size, len(scenes))
    return area, pixels, rows, cols


def _render(items, slots, image_size, sizes, background, noise_key, drop_hidden):
    """Images (N, S, S, 3) uint8, masks (N, S, S) uint8 and each item's visible pixels and
    their row and column sums (N, K) of the scenes in `slots`.

    With `drop_hidden`, items mostly covered by later ones are switched off in `slots["on"]`
    first (a mask-only pass), then the scenes are drawn without them. Dropping an item only
    uncovers earlier ones, so the items kept stay visible.
    """
    count = len(slots["on"])
    images = np.empty((count, image_size, image_size, 3), np.uint8)
    masks = np.zeros((count, image_size, image_size), np.uint8)
    moments = [np.zeros(slots["on"].shape) for _ in range(3)]
    # Chunks of a whole number of noise blocks and about 1 MB of canvas: the random gathers
    # and scatters stay in cache.
    step = _NOISE_BLOCK * max(1, 2**20 // (image_size * image_size * 3 * _NOISE_BLOCK))
    for first in range(0, count, step):
        last = min(count, first + step)
        part = {key: value[first:last] for key, value in slots.items()}  # views
        mask, image = masks[first:last], images[first:last]
        owners = np.zeros_like(mask)
        _backgrounds(noise_key, first, image, background)
        if drop_hidden:
            area, seen, _, _ = _visible(part, owners, _draw(items, part, mask, owners, sizes))
            part["on"] &= (seen >= np.maximum(4, _MIN_VISIBLE * area)) & (area > 0)
            mask[:] = 0
            owners[:] = 0
        drawn = _draw(items, part, mask, owners, sizes, image)
        for total, value in zip(moments, _visible(part, owners, drawn)[1:], strict=True):
            total[first:last] = value
    return images, masks, moments


# -------------------------------------------------------------------------- checks
def _check_arguments(
    split, image_size, min_items, max_items, item_size_range, background, scene_classes
):
    _check_split(split)
    if scene_classes not in _SCENE_CLASSES:
        raise ValueError(
            f"scene_classes must be one of {_SCENE_CLASSES} (items of distinct classes, or "
            f"all of one class), got {scene_classes!r}."
        )
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}.")
    integers = all(isinstance(v, (int, np.integer)) for v in (min_items, max_items))
    if not integers or not 1 <= min_items <= max_items <= len(FASHION_CLASSES):
        raise ValueError(
            f"Need 1 <= min_items <= max_items <= {len(FASHION_CLASSES)}, got "
            f"min_items={min_items}, max_items={max_items}."
        )
    try:
        low, high = (float(f) for f in item_size_range)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not 0 < low <= high <= 1:
        raise ValueError(
            "item_size_range must be (min, max) fractions of the canvas side with "
            f"0 < min <= max <= 1, got {item_size_range!r}."
        )
    smallest = int(round(low * image_size))
    if smallest < _MIN_ITEM_PX:
        raise ValueError(
            f"image_size={image_size} with item_size_range={item_size_range!r} makes the "
            f"smallest items {smallest} px; items need at least {_MIN_ITEM_PX} px: use "
            f"image_size >= {int(np.ceil(_MIN_ITEM_PX / low))} or a larger item_size_range."
        )
    if background not in _BACKGROUNDS:
        raise ValueError(f"background must be one of {_BACKGROUNDS}, got {background!r}.")
    return smallest, int(round(high * image_size))


def _check_count(name, value, least):
    if not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}.")


# -------------------------------------------------------------------------- scenes
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
    class_only_captions=0.0,
    scene_classes="distinct",
):
    """Scenes of several coloured Fashion-MNIST items, with captions and class masks.

    Args:
        split: "train" (items from the 60k train images) or "test" (the 10k test images).
        num_scenes: N.
        image_size: canvas side S (32..256 with the default item sizes).
        min_items, max_items: items per scene, of distinct classes (at most 10).
        item_size_range: (min, max) item side as a fraction of S.
        num_captions: captions per scene; more than one gives different templates and orders
            (the first caption does not depend on `num_captions`).
        background: "noise" (dim coloured noise with soft blotches) or "black".
        seed: with `split`, seeds everything.
        data_dir: where the Fashion-MNIST .gz files are (see `load_fashion_mnist`).
        cache_dir: optional folder to keep generated scenes in as .npz (off by default:
            generating is about as fast as loading).
        class_only_captions: fraction of the scenes (drawn per scene, seeded) whose captions
            name only the classes ("a sandal, a bag and a coat."), without colours and
            positions. Full captions can be told apart by colours and positions alone, a
            shortcut that lets image-text training skip learning the classes (see
            docs/results.md); images, masks and labels do not depend on this.
        scene_classes: "distinct" (default): a scene's items have distinct classes, drawn
            independently, so no part of a scene predicts the rest. "same": all items of a
            scene share one class (different items, colours, sizes and places), so any
            item predicts the scene's class, as in object-centric data, while scenes keep
            several small items to localise. Everything else is drawn as for "distinct".

    Returns a dict of numpy arrays:
        image: (N, S, S, 3) uint8;
        caption: (N,) object array of str, or (N, num_captions) when num_captions > 1;
        mask: (N, S, S) uint8, 0 = background, c + 1 = FASHION_CLASSES[c];
        labels: (N, 10) uint8 multi-hot of the classes visible in the scene.

    Items later in a scene occlude earlier ones, and the mask shows what is visible; an item
    mostly hidden by later ones is left out of the scene altogether, so a scene may rarely
    hold fewer than `min_items` items.
    """
    sizes = _check_arguments(
        split, image_size, min_items, max_items, item_size_range, background, scene_classes
    )
    _check_count("num_scenes", num_scenes, 0)
    _check_count("num_captions", num_captions, 1)
    if not 0 <= class_only_captions <= 1:
        raise ValueError(
            f"class_only_captions is a fraction of the scenes in [0, 1], got {class_only_captions!r}."
        )
    arguments = (split, num_scenes, image_size, min_items, max_items)
    arguments += (tuple(item_size_range), num_captions, background, seed)
    arguments += (float(class_only_captions),)
    # The default keeps the cache key (and so the cached files) of earlier versions.
    key = arguments + (() if scene_classes == "distinct" else (scene_classes,))
    return _cached(key, cache_dir, lambda: _make_scenes(*arguments, scene_classes, sizes, data_dir))


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
    class_only_captions,
    scene_classes,
    sizes,
    data_dir,
):
    del item_size_range  # as `sizes`: (smallest, largest) item side in pixels
    items, item_labels = load_fashion_mnist(split, data_dir)
    # Items of class c are order[starts[c] : starts[c] + counts[c]].
    order = np.argsort(item_labels, kind="stable")
    counts = np.bincount(item_labels, minlength=len(FASHION_CLASSES))[: len(FASHION_CLASSES)]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    needed = 1 if scene_classes == "same" else max_items
    if np.count_nonzero(counts) < needed:
        raise ValueError(
            f"The {split} split has items of {np.count_nonzero(counts)} classes; scenes of "
            f"max_items={max_items} distinct classes need at least that many (or use "
            'scene_classes="same", which needs one).'
        )
    palette = np.asarray(list(COLOURS.values()), np.float32)

    def draw(block):
        rng = _generator(seed, split, 1, block)
        count = _PARAMETER_BLOCK
        number = rng.integers(min_items, max_items + 1, count)
        keys = rng.random((count, len(FASHION_CLASSES)))
        keys[:, counts == 0] = np.inf  # classes missing from the split are never drawn
        classes = np.argsort(keys, axis=1)[:, :max_items]  # distinct, in random order
        if scene_classes == "same":
            classes = np.repeat(classes[:, :1], max_items, axis=1)
        pick = rng.random((count, max_items))
        side = rng.integers(sizes[0], sizes[1] + 1, (count, max_items))
        colour = rng.integers(0, len(palette), (count, max_items))
        tops, lefts = _place(rng, side, image_size)
        # Caption k's order of the items; caption 0's does not depend on num_captions.
        orders = np.argsort(rng.random((num_captions, count, max_items)), axis=2)
        return {
            "on": np.arange(max_items)[None, :] < number[:, None],
            "item": order[starts[classes] + (pick * counts[classes]).astype(np.int64)],
            "class": classes,
            "size": side,
            "top": tops,
            "left": lefts,
            "colour_id": colour,
            "orders": orders.transpose(1, 0, 2),
        }

    slots = _blocks(num_scenes, draw)
    slots["colour"] = palette[slots["colour_id"]]
    images, masks, moments = _render(
        items, slots, image_size, sizes, background, (seed, split, 4), drop_hidden=True
    )
    labels = np.zeros((num_scenes, len(FASHION_CLASSES)), np.uint8)
    # maximum, not assignment: a class may fill several slots, some of them off.
    scene_index = np.broadcast_to(np.arange(num_scenes)[:, None], slots["class"].shape)
    np.maximum.at(labels, (scene_index, slots["class"]), slots["on"].astype(np.uint8))
    # Its own random stream: the choice does not change anything else about the scenes.
    class_only = _generator(seed, split, 6, 0).random(num_scenes) < class_only_captions
    captions = _captions(slots, moments, image_size, num_captions, class_only)
    return {
        "image": images,
        "caption": captions[:, 0] if num_captions == 1 else captions,
        "mask": masks,
        "labels": labels,
    }


def _captions(slots, moments, image_size, num_captions, class_only):
    """Name each visible item with its colour, class and grid cell of its visible centre."""
    pixels, rows, cols = moments
    with np.errstate(invalid="ignore", divide="ignore"):
        # Same arithmetic as int(3 * ys.mean() / S) over the item's mask pixels.
        row = np.minimum(2, np.nan_to_num(3 * (rows / pixels) / image_size)).astype(np.int64)
        col = np.minimum(2, np.nan_to_num(3 * (cols / pixels) / image_size)).astype(np.int64)
    colour_names = list(COLOURS)
    captions = np.empty((len(pixels), num_captions), dtype=object)
    for n, on in enumerate(slots["on"]):
        phrases = []
        for j in np.flatnonzero(on):
            name = colour_names[slots["colour_id"][n, j]]
            item = FASHION_CLASSES[slots["class"][n, j]]
            if class_only[n]:
                phrases.append(f"{'an' if item[0] in 'aeiou' else 'a'} {item}")
                continue
            article = "an" if name[0] in "aeiou" else "a"
            where = POSITIONS[row[n, j]][col[n, j]]
            phrases.append(f"{article} {name} {item} {where}")
        for k in range(num_captions):
            listed = _join([phrases[i] for i in slots["orders"][n, k] if i < len(phrases)])
            verb = "is" if len(phrases) == 1 else "are"
            captions[n, k] = _TEMPLATES[k % len(_TEMPLATES)].format(items=listed, verb=verb)
    return captions


def _join(phrases):
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _cached(arguments, cache_dir, make):
    """Scenes are a pure function of their arguments: optionally keep them on disk."""
    if not cache_dir:
        return make()
    key = "-".join(str(v).replace(" ", "") for v in arguments)
    path = os.path.join(os.fspath(cache_dir), f"fashion-scenes-v{_VERSION}-{key}.npz")
    if os.path.exists(path):
        with np.load(path) as stored:
            result = {key: stored[key] for key in stored.files}
        result["caption"] = result["caption"].astype(object)
        return result
    result = make()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp.npz"
        # Captions as fixed-width unicode: the file loads without pickle.
        np.savez(temporary, **{**result, "caption": result["caption"].astype(str)})
        os.replace(temporary, path)
    except OSError:
        pass  # a read-only folder only costs the regeneration next time
    return result


# --------------------------------------------------------------------------- items
def fashion_items(split="test", num_items=None, image_size=64, seed=0, data_dir=None):
    """One coloured item per image, for zero-shot classification.

    Each image holds one Fashion-MNIST item of the split, 50-90% of the canvas side, at a
    random position, in a random colour of `COLOURS`, on the "noise" background of
    `fashion_scenes`. `num_items=None` takes the whole split in order; otherwise a seeded
    sample (without replacement while the split lasts).

    Returns {"image": (N, S, S, 3) uint8, "label": (N,) int64}.
    """
    sizes = _check_arguments(split, image_size, 1, 1, (0.5, 0.9), "noise", "distinct")
    items, item_labels = load_fashion_mnist(split, data_dir)
    total = len(items)
    if num_items is None:
        chosen = np.arange(total)
    else:
        _check_count("num_items", num_items, 0)
        sampler = _generator(seed, split, 3, 0)
        repeats = max(1, -(-num_items // total))
        chosen = np.concatenate([sampler.permutation(total) for _ in range(repeats)])
        chosen = chosen[:num_items]
    palette = np.asarray(list(COLOURS.values()), np.float32)

    def draw(block):
        rng = _generator(seed, split, 2, block)
        side = rng.integers(sizes[0], sizes[1] + 1, (_PARAMETER_BLOCK, 1))
        colour = rng.integers(0, len(palette), (_PARAMETER_BLOCK, 1))
        tops, lefts = _place(rng, side, image_size)
        return {"size": side, "colour": palette[colour], "top": tops, "left": lefts}

    slots = _blocks(len(chosen), draw)
    slots["on"] = np.ones((len(chosen), 1), bool)
    slots["item"] = chosen[:, None]
    slots["class"] = item_labels[chosen][:, None]
    images, _, _ = _render(
        items, slots, image_size, sizes, "noise", (seed, split, 5), drop_hidden=False
    )
    return {"image": images, "label": item_labels[chosen].astype(np.int64)}
