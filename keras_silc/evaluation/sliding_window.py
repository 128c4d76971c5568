"""Sliding-window zero-shot segmentation of large images: mmsegmentation's `slide_inference`
(TCL's protocol, SILC's Table 2), with the windows of several images run in one batch.

For one image already rescaled for inference, (h, w) pixels, whose labels are (H, W):

1. windows: a grid of `crop_size` windows every `stride` pixels, the last row and column
   moved back inside the image; a window is never larger than the image (`window_boxes`,
   mmseg's formula);
2. each window, zero-padded at the bottom and right to a multiple of the patch size (as TCL
   pads), goes through `dense_scores`: the cosine similarity of every patch's dense feature
   with every class embedding, the maths of `segmentation.segment`. The windows of consecutive
   images fill batches of `batch_size`;
3. each window's (gh, gw, C) scores are upsampled bilinearly to the padded window, cropped to
   the window, added into an (h, w, C) canvas and divided by the number of windows covering
   each pixel;
4. the canvas is resized bilinearly to (H, W) and the argmax over classes is the prediction.

Steps 3 and 4 are linear in the scores and separable in rows and columns, and the windows are
the product of a set of row intervals and a set of column intervals (so the coverage count is
a product too). The image's logits are therefore sum_ij A_i S_ij B_j^T, with one (H, gh)
matrix per window row, one (W, gw) matrix per window column (built in numpy, `axis_operators`)
and S_ij the (gh, gw, C) scores of window (i, j). The device evaluates two einsums and an
argmax and returns (H, W) labels; the (h, w, C) canvas is never built and nothing large goes
back to the host. The interpolation matrices are those of `keras.ops.image.resize(...,
"bilinear", antialias=False)`: half-pixel centres, edges clamped, as torch's
`F.interpolate(align_corners=False)` that mmseg uses (the tests check both against a direct
implementation of mmseg's loop).
"""

import collections
import functools

import keras
import numpy as np

from keras_silc.checks import positive_int
from keras_silc.checks import size_pair
from keras_silc.evaluation.common import as_float_images
from keras_silc.evaluation.common import check_finite
from keras_silc.evaluation.common import embedding_width
from keras_silc.evaluation.common import model_fn
from keras_silc.evaluation.segmentation import dense_scores

# TCL's test pipeline for every Table 2 data set: keep-ratio resize to at most 2048 px on the
# long side and 448 px on the short side, then 448 x 448 windows every 224 px.
TCL_IMAGE_SCALE = (2048, 448)
TCL_CROP_SIZE = (448, 448)
TCL_STRIDE = (224, 224)

# Output rows and columns are padded to a multiple of this, so that images of similar sizes
# share one compiled assembly function (JAX compiles once per shape).
_BUCKET = 64
# Largest (rows x columns x classes) block of logits assembled at once (float32: 256 MiB).
_MAX_LOGITS = 2**26


def rescaled_size(height, width, scale=TCL_IMAGE_SCALE):
    """(height, width) of mmcv's keep-ratio `imrescale` to `scale`: the largest size whose
    long side is at most max(scale) and short side at most min(scale), rounded as mmcv rounds
    (`int(x * factor + 0.5)`). TCL's (2048, 448) makes the short side 448 px."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def _axis_boxes(size, crop, stride):
    grids = max(size - crop + stride - 1, 0) // stride + 1
    boxes = []
    for index in range(grids):
        stop = min(index * stride + crop, size)
        boxes.append((max(stop - crop, 0), stop))
    return boxes


def window_geometry(crop_size, stride):
    """(crop_size, stride) as (height, width) pairs; a ValueError unless the windows cover
    the image (stride at most crop_size: mmseg asserts that every pixel is covered)."""
    crop_size, stride = size_pair(crop_size, "crop_size"), size_pair(stride, "stride")
    if stride[0] > crop_size[0] or stride[1] > crop_size[1]:
        raise ValueError(
            f"stride {stride} is larger than crop_size {crop_size}: the pixels between two "
            "windows would be in no window. Use a stride of at most crop_size (TCL: 448-pixel "
            "windows every 224 pixels)."
        )
    return crop_size, stride


def window_boxes(height, width, crop_size=TCL_CROP_SIZE, stride=TCL_STRIDE):
    """The windows of mmseg's `slide_inference` on an image of (height, width) pixels, as
    (row intervals, column intervals): lists of (start, stop); the windows are every pair."""
    (crop_h, crop_w), (stride_h, stride_w) = window_geometry(crop_size, stride)
    return _axis_boxes(height, crop_h, stride_h), _axis_boxes(width, crop_w, stride_w)


@functools.lru_cache(maxsize=512)
def resize_matrix(in_size, out_size):
    """(out_size, in_size) float64 matrix of a 1-D bilinear resize with half-pixel centres and
    clamped edges, no antialiasing: `keras.ops.image.resize(x, ..., "bilinear",
    antialias=False)` along one axis is `matrix @ x`."""
    source = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    source = np.clip(source, 0.0, in_size - 1)
    lower = np.floor(source).astype(np.int64)
    upper = np.minimum(lower + 1, in_size - 1)
    fraction = source - lower
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lower), 1.0 - fraction)
    np.add.at(matrix, (rows, upper), fraction)
    return matrix


@functools.lru_cache(maxsize=64)
def axis_operators(size, out_size, boxes, padded, grid, rows=None):
    """(len(boxes), rows, grid) float32: per window interval of one axis ((start, stop)
    pairs), the linear map from its `grid` scores to the output axis: upsample to the
    `padded` window, crop to the window, place it, divide by the coverage count, resize
    `size` -> `out_size`. Rows past `out_size` (up to `rows`) are zero. Cached: images of
    one size share them (do not modify the result)."""
    window = boxes[0][1] - boxes[0][0]
    upsample = resize_matrix(grid, padded)[:window]  # (window, grid)
    coverage = np.zeros(size)
    for start, stop in boxes:
        coverage[start:stop] += 1
    resize = resize_matrix(size, out_size)  # (out_size, size)
    operators = np.zeros((len(boxes), rows or out_size, grid), np.float32)
    for index, (start, stop) in enumerate(boxes):
        operators[index, :out_size] = resize[:, start:stop] @ (
            upsample / coverage[start:stop, None]
        )
    return operators


def _round_up(value, multiple):
    return -(-value // multiple) * multiple


class _Plan:
    """The windows of one image and the padded window size the model sees."""

    def __init__(self, image_size, out_size, crop_size, stride, patch):
        self.size, self.out_size = image_size, out_size
        rows, cols = window_boxes(*image_size, crop_size, stride)
        self.rows, self.cols = tuple(rows), tuple(cols)
        self.window = (self.rows[0][1] - self.rows[0][0], self.cols[0][1] - self.cols[0][0])
        self.padded = tuple(_round_up(s, patch) for s in self.window)

    def windows(self, image):
        pad = [(0, self.padded[0] - self.window[0]), (0, self.padded[1] - self.window[1])]
        pad += [(0, 0)] * (image.ndim - 2)
        for y1, y2 in self.rows:
            for x1, x2 in self.cols:
                yield np.pad(image[y1:y2, x1:x2], pad)

    def assemble(self, fn, scores):
        """(H, W) labels (or (H, W, C) logits) from the windows' (gh, gw, C) scores."""
        scores = np.stack(scores)
        grid_h, grid_w, num_classes = scores.shape[1:]
        scores = scores.reshape(len(self.rows), len(self.cols), *scores.shape[1:])
        height, width = self.out_size
        cols = axis_operators(
            self.size[1], width, self.cols, self.padded[1], grid_w, _round_up(width, _BUCKET)
        )
        chunk = max(_BUCKET, _MAX_LOGITS // (cols.shape[1] * num_classes) // _BUCKET * _BUCKET)
        padded_height = _round_up(height, _BUCKET)
        if padded_height > chunk:  # a large image: its rows in equal chunks
            padded_height = _round_up(height, chunk)
        rows = axis_operators(
            self.size[0], height, self.rows, self.padded[0], grid_h, padded_height
        )
        chunk = min(chunk, padded_height)
        parts = [
            fn(scores, rows[:, start : start + chunk], cols)
            for start in range(0, rows.shape[1], chunk)
        ]
        return np.concatenate(parts)[:height, :width]


def _window_scores(model, windows, classes, source=None):
    return dense_scores(model, windows, classes, source)


def _logits(scores, rows, cols):
    """sum_ij rows_i S_ij cols_j^T: (R, W, C) from scores (I, J, gh, gw, C), rows (I, R, gh)
    and cols (J, W, gw). The last contraction, over R x W x C outputs, sums I * gh (or
    J * gw) terms: the axis with fewer windows goes last."""
    if rows.shape[0] * rows.shape[2] <= cols.shape[0] * cols.shape[2]:
        per_row = keras.ops.einsum("ijabc,jwb->iawc", scores, cols)
        return keras.ops.einsum("ira,iawc->rwc", rows, per_row)
    per_col = keras.ops.einsum("ijabc,ira->jrbc", scores, rows)
    return keras.ops.einsum("jrbc,jwb->rwc", per_col, cols)


def _assemble_labels(model, scores, rows, cols):
    return keras.ops.cast(keras.ops.argmax(_logits(scores, rows, cols), axis=-1), "int32")


def _assemble_logits(model, scores, rows, cols):
    return _logits(scores, rows, cols)


def _patch_size(model):
    config = getattr(model, "vision_config", None) or {}
    return int(config.get("patch_size") or 1)


def slide_inference(
    model,
    examples,
    classes,
    *,
    crop_size=TCL_CROP_SIZE,
    stride=TCL_STRIDE,
    source=None,
    batch_size=16,
    logits=False,
):
    """Yields `(example, prediction)` for every example, in order: (H, W) int32 class indices
    (argmax over the C classes), or (H, W, C) float32 averaged logits with `logits=True`.

    Args:
        model: a `SilcModel` (anything with `dense_image_features`; a `vision_config` with a
            "patch_size" makes windows be padded to a multiple of it).
        examples: an iterable of dicts with "image", an (h, w, 3) uint8 or [0, 1] float image
            already rescaled for inference (see `rescaled_size`), and optionally "out_size",
            the (H, W) of its label map (default: the image's size). Other keys are passed
            through.
        classes: (C, J) class embeddings (`class_embeddings`).
        crop_size, stride: the windows (TCL: 448 and 224 pixels).
        source: the dense features: "map_values", "tokens" or None (see `segment`).
        batch_size: windows per model call (a partial batch is zero-padded to a power of two,
            so that few shapes are compiled).
        logits: return the averaged, resized logits instead of their argmax.
    """
    crop_size, stride = window_geometry(crop_size, stride)
    classes = np.asarray(classes, np.float32)
    if classes.ndim != 2 or not len(classes):
        raise ValueError(f"classes must be (C, J) class embeddings, got shape {classes.shape}.")
    width = embedding_width(model)
    if width is not None and classes.shape[1] != width:
        raise ValueError(
            f"classes are {classes.shape[1]}-wide class embeddings, but this model embeds in "
            f"{width} dimensions: make them with class_embeddings(model, tokenizer, class_names)."
        )
    batch_size = positive_int(batch_size, "batch_size")
    score_fn = model_fn(
        model, f"slide/scores/{source}", functools.partial(_window_scores, source=source)
    )
    name = "slide/logits" if logits else "slide/labels"
    assemble_fn = model_fn(model, name, _assemble_logits if logits else _assemble_labels)
    patch = _patch_size(model)
    queue = collections.deque()  # [example, plan, scores], in order
    windows, owners = [], []

    def run_batch():
        batch = np.stack(windows)
        # A partial batch is zero-padded to a power of two (or batch_size): few shapes to
        # compile, at most twice the work.
        missing = min(batch_size, 1 << (len(batch) - 1).bit_length()) - len(batch)
        if missing > 0:
            batch = np.concatenate([batch, np.zeros((missing, *batch.shape[1:]), np.float32)])
        scores = check_finite(score_fn(batch, classes)[: len(windows)], "dense scores")
        for (entry, index), score in zip(owners, scores, strict=True):
            entry[2][index] = score
        windows.clear()
        owners.clear()

    def finished():
        while queue and all(score is not None for score in queue[0][2]):
            example, plan, scores = queue.popleft()
            yield example, plan.assemble(assemble_fn, scores)

    for example in examples:
        if not isinstance(example, dict) or "image" not in example:
            raise TypeError("Every example must be a dict with an 'image' (h, w, 3) array.")
        image = np.asarray(example["image"])
        if image.ndim != 3 or image.shape[-1] != 3 or not image.size:
            raise ValueError(
                f"Every image must be (h, w, 3) with h, w >= 1; got shape {image.shape}."
            )
        image = as_float_images(image[None])[0]
        out_size = size_pair(example.get("out_size", image.shape[:2]), "An example's 'out_size'")
        plan = _Plan(image.shape[:2], out_size, crop_size, stride, patch)
        if windows and windows[0].shape[:2] != plan.padded:
            run_batch()  # a batch holds windows of one size
        entry = [example, plan, [None] * (len(plan.rows) * len(plan.cols))]
        queue.append(entry)
        for index, window in enumerate(plan.windows(image)):
            windows.append(window)
            owners.append((entry, index))
            if len(windows) == batch_size:
                run_batch()
                yield from finished()
    if windows:
        run_batch()
    yield from finished()
