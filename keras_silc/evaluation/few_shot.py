"""Few-shot linear classification on frozen image features, as big_vision's
`big_vision/evaluators/fewshot_lsr.py`.

The images are embedded once. Then, per seed, each class's train examples are shuffled with
`np.random.default_rng(seed)` and the first `shots` of them are taken (so for one seed the
5-shot set contains the 1-shot set, as in big_vision). On that sample, a closed-form
L2-regularised least-squares classifier:

    x = (f - mean) / (std + 1e-5)        mean, std: per feature, over the sampled train set
    x = [x, 100]                         a constant bias feature, large so it is almost
                                         unregularised (big_vision's BIAS_CONSTANT)
    y = 2 * onehot(label) - 1
    W = (x^T x + l2 I)^-1 x^T y          l2 = 1024

and the test accuracy of argmax(x_test W). Reported per shot count: the mean and standard
deviation over seeds, and each seed's accuracy ("{k}shot_seed{s}").

The features are the pooled image embeddings of `model.encode_image` (the MAP head output
projected to the shared space and L2-normalised), which is what big_vision's evaluator reads
by default (`zimg`, the first output of the predict function).
"""

import numpy as np

from keras_silc.checks import positive_int
from keras_silc.checks import positive_ints
from keras_silc.evaluation.common import embed_images
from keras_silc.evaluation.common import image_batches
from keras_silc.evaluation.zero_shot import check_labels
from keras_silc.evaluation.zero_shot import class_indices
from keras_silc.evaluation.zero_shot import one_label_each

BIAS_CONSTANT = 100.0
STD_EPSILON = 1e-5


def _whiten(features, mean, std, bias):
    x = (np.asarray(features, np.float64) - mean) / std
    return np.concatenate([x, np.full((len(x), 1), bias)], axis=1)


def fit_ridge(features, labels, num_classes, l2_regularization=1024.0, bias=BIAS_CONSTANT):
    """big_vision's closed-form least squares on (N, D) features and (N,) int labels.

    Returns (weights (D + 1, C), mean (1, D), std (1, D)); `predict_ridge` applies them.
    """
    features = np.asarray(features, np.float64)
    labels = check_labels(labels, num_classes)
    mean = features.mean(axis=0, keepdims=True)
    std = features.std(axis=0, keepdims=True) + STD_EPSILON
    x = _whiten(features, mean, std, bias)
    y = 2.0 * np.eye(num_classes)[labels] - 1.0
    n, d = x.shape
    if n >= d:  # (x^T x + l2 I)^-1 x^T y
        weights = np.linalg.solve(x.T @ x + l2_regularization * np.eye(d), x.T @ y)
    else:  # the same solution through the smaller N x N system: x^T (x x^T + l2 I)^-1 y
        weights = x.T @ np.linalg.solve(x @ x.T + l2_regularization * np.eye(n), y)
    return weights, mean, std


def predict_ridge(weights, mean, std, features, bias=BIAS_CONSTANT):
    """(N,) predicted classes of `fit_ridge`'s classifier."""
    return np.argmax(_whiten(features, mean, std, bias) @ weights, axis=1)


def fewshot_accuracy(
    train_features, train_labels, test_features, test_labels, num_classes, l2_regularization=1024.0
):
    """Test accuracy of `fit_ridge` on the given train features."""
    weights, mean, std = fit_ridge(train_features, train_labels, num_classes, l2_regularization)
    predictions = predict_ridge(weights, mean, std, test_features)
    return float(np.mean(predictions == np.asarray(test_labels)))


def sample_shots(labels, shots, seed, num_classes):
    """Indices of `shots` examples per class: big_vision's per-class permutation, first k."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    return np.concatenate([indices[:shots] for indices in per_class])


def embed_labelled(model, images, labels, batch_size, verbose, image_key, label_key):
    """(features (N, J), labels (N,)) of an array pair or a source of dict batches."""
    data = image_batches(
        images, labels, (image_key, label_key), batch_size, verbose, "exactly one label"
    )
    features, all_labels = [], []
    for batch_images, batch_labels in data:
        all_labels.append(one_label_each(batch_labels))
        features.append(embed_images(model, batch_images, batch_size))
    return np.concatenate(features), class_indices(np.concatenate(all_labels), "labels")


def few_shot_classification(
    model,
    train_images,
    train_labels=None,
    test_images=None,
    test_labels=None,
    shots=(1, 5, 10, 25),
    seeds=3,
    l2_regularization=1024.0,
    num_classes=None,
    batch_size=256,
    verbose=False,
    image_key="image",
    label_key="label",
):
    """Few-shot linear-probe accuracy: {"{k}shot_mean", "{k}shot_std", "{k}shot_seed{s}"}.

    Args:
        model: a `SilcModel` (anything with `encode_image`).
        train_images, test_images: (N, H, W, 3) uint8 or [0, 1] float images, or sources of
            dict batches (dict of arrays, `tf.data.Dataset`, iterable) with `image_key` and
            `label_key`; then the matching labels are None.
        train_labels, test_labels: (N,) int class indices.
        shots: examples per class in each few-shot train set (an int or a sequence).
        seeds: the number of random train samples per shot count (seeds 0 .. seeds - 1).
        l2_regularization: the ridge strength (big_vision: 1024).
        num_classes: C; default 1 + the largest label seen.
    """
    if test_images is None:
        raise ValueError("test_images is required.")
    shots = positive_ints(shots, "shots")
    seeds = positive_int(seeds, "seeds")
    train_features, train_labels = embed_labelled(
        model, train_images, train_labels, batch_size, verbose, image_key, label_key
    )
    test_features, test_labels = embed_labelled(
        model, test_images, test_labels, batch_size, verbose, image_key, label_key
    )
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    check_labels(train_labels, num_classes, "train labels")
    check_labels(test_labels, num_classes, "test labels")
    counts = np.bincount(train_labels, minlength=num_classes)
    results = {}
    for shot in shots:
        if counts.min() < shot:
            raise ValueError(
                f"{shot}-shot needs {shot} train examples of every class; class "
                f"{int(np.argmin(counts))} has {int(counts.min())}."
            )
        accuracies = []
        for seed in range(seeds):
            chosen = sample_shots(train_labels, shot, seed, num_classes)
            accuracy = fewshot_accuracy(
                train_features[chosen],
                train_labels[chosen],
                test_features,
                test_labels,
                num_classes,
                l2_regularization,
            )
            accuracies.append(accuracy)
        results[f"{shot}shot_mean"] = float(np.mean(accuracies))
        results[f"{shot}shot_std"] = float(np.std(accuracies))
        results.update({f"{shot}shot_seed{s}": a for s, a in enumerate(accuracies)})
    return results
