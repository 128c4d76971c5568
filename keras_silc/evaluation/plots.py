"""Pictures for the README, the notebooks and reports: segmentation overlays, curves."""

import os

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _palette(num_classes):
    import matplotlib

    colours = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"].colors
    return np.array([(0.0, 0.0, 0.0)] + list(colours[:num_classes]))


def plot_segmentation(images, predictions, masks, class_names, path, captions=None, alpha=0.6):
    """A grid: image | prediction over the image | ground truth over the image, and a legend."""
    plt = _pyplot()
    images = np.asarray(images)
    images = images / 255.0 if images.dtype == np.uint8 else images
    palette = _palette(len(class_names))
    rows = len(images)
    figure, axes = plt.subplots(rows, 3, figsize=(7.5, 2.6 * rows + 0.6), squeeze=False)
    for row in range(rows):
        overlays = [images[row]]
        for labels in (predictions[row], masks[row]):
            colour = palette[np.asarray(labels)]
            shown = np.where(np.asarray(labels)[..., None] > 0, alpha, 0.0)
            overlays.append((1 - shown) * images[row] + shown * colour)
        for column, (picture, title) in enumerate(
            zip(overlays, ("image", "zero-shot prediction", "ground truth"), strict=True)
        ):
            axes[row, column].imshow(np.clip(picture, 0, 1), interpolation="nearest")
            axes[row, column].axis("off")
            if row == 0:
                axes[row, column].set_title(title, fontsize=9)
        if captions is not None:
            axes[row, 0].text(0, -2, str(captions[row])[:70], fontsize=5, va="bottom")
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[c + 1]) for c in range(len(class_names))]
    figure.legend(handles, class_names, loc="lower center", ncol=5, fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_metrics(history, path, keys=None):
    """Metric-versus-epoch curves of a History dict (or `history.history`), one panel each."""
    plt = _pyplot()
    history = getattr(history, "history", history)
    keys = keys or [k for k, v in history.items() if len(v) and np.isfinite(v).all()]
    keys = [k for k in keys if k in history][:9]
    if not keys:
        raise ValueError("No metrics to plot.")
    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.8 * rows), squeeze=False)
    for axis, key in zip(axes.ravel(), keys, strict=False):
        axis.plot(np.arange(1, len(history[key]) + 1), history[key], marker=".")
        axis.set_title(key, fontsize=9)
        axis.set_xlabel("epoch", fontsize=8)
    for axis in axes.ravel()[len(keys) :]:
        axis.axis("off")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
