"""Pictures for reports and notebooks: segmentation overlays and metric curves, saved as PNG.

Figures are drawn with matplotlib's object-oriented API on an Agg canvas: nothing is shown,
and the global pyplot backend (e.g. a notebook's inline one) is left alone.
"""

import os

import numpy as np

from keras_silc.evaluation.common import check_image_shape
from keras_silc.extras import require


def _figure(width, height):
    require("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path, dpi):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


def palette(num_classes):
    """(num_classes + 1, 3) RGB in [0, 1]: black for background (0), then a colour per class."""
    matplotlib = require("matplotlib")

    name = "tab10" if num_classes <= 10 else "tab20"
    colours = list(matplotlib.colormaps[name].colors)
    colours = (colours * (num_classes // len(colours) + 1))[:num_classes]
    return np.array([(0.0, 0.0, 0.0), *colours])


def _resize_nearest(image, shape):
    rows = (np.arange(shape[0]) * image.shape[0] // shape[0]).astype(int)
    cols = (np.arange(shape[1]) * image.shape[1] // shape[1]).astype(int)
    return image[rows][:, cols]


def plot_segmentation(images, predictions, masks, class_names, path, captions=None, alpha=0.6):
    """A PNG grid, one row per image: image | prediction over it | ground truth over it, with
    a legend of class colours. Labels use the mask convention (0 background, c + 1 class c);
    background pixels are left uncoloured. `masks` may be None. Returns `path`."""
    images = np.asarray(check_image_shape(images))
    images = images / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    predictions = np.asarray(predictions)
    columns = [("image", None), ("zero-shot prediction", predictions)]
    if masks is not None:
        columns.append(("ground truth", np.asarray(masks)))
    lengths = {"images": len(images), "predictions": len(predictions)}
    if masks is not None:
        lengths["masks"] = len(masks)
    if captions is not None:
        lengths["captions"] = len(captions)
    if len(set(lengths.values())) > 1:
        raise ValueError(f"Give one of each per image; got lengths {lengths}.")
    if not len(images):
        raise ValueError("No images to plot.")
    colours = palette(len(class_names))
    rows = len(images)
    figure = _figure(2.5 * len(columns), 2.5 * rows + 0.7)
    axes = figure.subplots(rows, len(columns), squeeze=False)
    for row in range(rows):
        for column, (title, labels) in enumerate(columns):
            axis = axes[row, column]
            if labels is None:
                picture = images[row]
            else:
                label_map = np.clip(np.asarray(labels[row]).astype(int), 0, len(class_names))
                image = _resize_nearest(images[row], label_map.shape)
                shown = np.where(label_map[..., None] > 0, alpha, 0.0)
                picture = (1 - shown) * image + shown * colours[label_map]
            axis.imshow(np.clip(picture, 0, 1), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=9)
        if captions is not None:
            axes[row, 0].set_xlabel(str(captions[row])[:60], fontsize=5)
    from matplotlib.patches import Patch

    handles = [Patch(color=colours[c + 1], label=name) for c, name in enumerate(class_names)]
    figure.legend(handles=handles, loc="lower center", ncol=min(5, len(class_names)), fontsize=7)
    figure.tight_layout(rect=(0, 0.6 / (2.5 * rows + 0.7) + 0.02, 1, 1))
    return _save(figure, path, dpi=110)


def plot_metrics(history, path, keys=None, x_label="epoch", max_panels=12):
    """Metric curves, one panel per key, as a PNG; returns `path`.

    Args:
        history: a `keras.callbacks.History` or its `.history` dict (key -> list of values,
            one per epoch), or any dict key -> list of values, or key -> list of (x, value).
        keys: the keys to plot (default: every numeric key, at most `max_panels`).
        x_label: the x-axis name ("epoch", "step"...).
    """
    history = getattr(history, "history", history)

    def points(values):
        values = list(values)
        if values and np.ndim(values[0]) == 1 and len(values[0]) == 2:
            x, y = zip(*values, strict=True)
            return np.asarray(x, float), np.asarray(y, float)
        return np.arange(1, len(values) + 1), np.asarray(values, float)

    def numeric(values):
        try:
            _, y = points(values)
        except (TypeError, ValueError):
            return False
        return y.size > 0 and np.isfinite(y).any()

    keys = [k for k in (keys or history) if k in history and numeric(history[k])][:max_panels]
    if not keys:
        raise ValueError(f"No numeric metrics to plot among {list(history)}.")
    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    figure = _figure(4 * columns, 2.8 * rows)
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis, key in zip(axes.ravel(), keys, strict=False):
        x, y = points(history[key])
        axis.plot(x, y, marker="." if len(x) < 50 else None)
        axis.set_title(key, fontsize=9)
        axis.set_xlabel(x_label, fontsize=8)
        axis.grid(alpha=0.3)
    for axis in axes.ravel()[len(keys) :]:
        axis.axis("off")
    figure.tight_layout()
    return _save(figure, path, dpi=100)
