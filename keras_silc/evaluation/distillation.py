"""Is the self-distillation doing anything? The head's state on a set of images.

DINO-style heads have two ways to fail quietly (Caron et al. 2021, Sec. 5.3): a *uniform*
collapse, where every image gets the same flat distribution over the K prototypes (the
distillation loss sits at log K and teaches nothing), and a *dominant* collapse, where one
prototype takes every image. The training logs (`teacher_entropy`, `student_teacher_kl`) are
means over the run; this looks at the trained model itself.
"""

import math

import keras
import numpy as np

from keras_silc.evaluation.common import as_float_images
from keras_silc.evaluation.common import image_size
from keras_silc.evaluation.common import l2_normalize

# Above this fraction of log K the teacher's targets are as good as uniform.
UNIFORM_ENTROPY_FRACTION = 0.97


def distillation_diagnostics(model, images, tower="teacher", batch_size=256):
    """The distillation head's state on `images` (e.g. a few hundred evaluation images).

    Args:
        model: a `SilcModel` with self-distillation.
        images: (N, H, W, 3) uint8 or [0, 1] float, N >= 2, resized to the model's input size.
        tower: "teacher" (the targets, centred and sharpened as in training) or "student".
        batch_size: images per forward pass.

    Returns:
        A dict of floats: "entropy" (mean over images of the tower's distribution, nats, at
        tau_t after centring for the teacher, at tau_s for the student), "max_entropy"
        (log K), "entropy_fraction", "bottleneck_cosine" (mean cosine between the images'
        L2-normalised bottleneck vectors: 1 when the head maps every image to the same
        point), "prototypes_used" (distinct argmax prototypes), and "collapse": "uniform",
        "dominant" or "none".
    """
    if not getattr(model, "self_distillation", False):
        raise ValueError(
            "distillation_diagnostics needs a SilcModel with self_distillation=True; this "
            "model has no distillation head in training."
        )
    if tower not in ("teacher", "student"):
        raise ValueError(f"tower must be 'teacher' or 'student', got {tower!r}.")
    images = as_float_images(images, image_size(model))
    if len(images) < 2:
        raise ValueError(f"distillation_diagnostics needs at least 2 images, got {len(images)}.")
    image_tower = getattr(model, tower)
    bottlenecks, logits = [], []
    for start in range(0, len(images), batch_size):
        embeddings = image_tower.encoder(images[start : start + batch_size])
        bottleneck = image_tower.head.bottleneck(embeddings)
        bottlenecks.append(keras.ops.convert_to_numpy(bottleneck).astype(np.float64))
        logits.append(
            keras.ops.convert_to_numpy(image_tower.head.prototypes(bottleneck)).astype(np.float64)
        )
    bottlenecks, logits = np.concatenate(bottlenecks), np.concatenate(logits)
    if tower == "teacher":
        center = keras.ops.convert_to_numpy(model.center).astype(np.float64)
        temperature = float(keras.ops.convert_to_numpy(model.current_teacher_temperature()))
        scores = (logits - center) / temperature
    else:
        scores = logits / model.student_temperature
    scores = scores - scores.max(axis=1, keepdims=True)
    log_p = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    entropy = float(-(np.exp(log_p) * log_p).sum(axis=1).mean())
    max_entropy = math.log(logits.shape[1])
    unit = l2_normalize(bottlenecks)
    count = len(unit)
    cosine = float((np.sum(unit @ unit.T) - count) / (count * (count - 1)))
    used = int(len(np.unique(log_p.argmax(axis=1))))
    fraction = entropy / max_entropy
    if fraction > UNIFORM_ENTROPY_FRACTION:
        collapse = "uniform"
    elif used == 1:
        collapse = "dominant"
    else:
        collapse = "none"
    return {
        "entropy": entropy,
        "max_entropy": max_entropy,
        "entropy_fraction": fraction,
        "bottleneck_cosine": cosine,
        "prototypes_used": float(used),
        "collapse": collapse,
    }
