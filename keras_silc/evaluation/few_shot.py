"""Few-shot linear classification on frozen image features, as big_vision's fewshot_lsr.

Per seed and shot count: sample `shots` train examples per class, centre and scale the features
with the sample's mean and standard deviation, append a constant bias feature, regress the
+/-1 one-hot targets in closed form, (X^T X + l2 I) W = X^T Y, and classify the test set by
argmax. The features are the pooled image embeddings (`encode_image`).
"""

import numpy as np

from keras_silc.evaluation.common import embed_images


def fit_ridge(features, labels, num_classes, l2_regularization=1024.0):
    """(weights (D + 1, C), mean, std) of big_vision's closed-form least squares."""
    features = np.asarray(features, np.float64)
    mean = features.mean(axis=0, keepdims=True)
    std = features.std(axis=0, keepdims=True) + 1e-6
    x = (features - mean) / std
    x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    targets = 2.0 * np.eye(num_classes)[np.asarray(labels)] - 1.0
    gram = x.T @ x + l2_regularization * np.eye(x.shape[1])
    weights = np.linalg.solve(gram, x.T @ targets)
    return weights, mean, std


def predict_ridge(weights, mean, std, features):
    x = (np.asarray(features, np.float64) - mean) / std
    x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    return np.argmax(x @ weights, axis=1)


def few_shot_classification(
    model,
    train_images,
    train_labels,
    test_images,
    test_labels,
    shots=(1, 5, 10, 25),
    seeds=3,
    l2_regularization=1024.0,
    batch_size=256,
    verbose=False,
):
    """{"{k}shot_mean", "{k}shot_std", "{k}shot_seeds"...}: test accuracy over seeds."""
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    if len(train_images) != len(train_labels) or len(test_images) != len(test_labels):
        raise ValueError("Each image set needs exactly one label per image.")
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    train_features = embed_images(model, train_images, batch_size, verbose)
    test_features = embed_images(model, test_images, batch_size, verbose)
    by_class = [np.flatnonzero(train_labels == c) for c in range(num_classes)]
    results = {}
    for shot in shots:
        if min(len(indices) for indices in by_class) < shot:
            raise ValueError(f"{shot}-shot needs {shot} train examples of every class.")
        accuracies = []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            chosen = np.concatenate([rng.choice(i, shot, replace=False) for i in by_class])
            weights, mean, std = fit_ridge(
                train_features[chosen], train_labels[chosen], num_classes, l2_regularization
            )
            predictions = predict_ridge(weights, mean, std, test_features)
            accuracies.append(float(np.mean(predictions == test_labels)))
        results[f"{shot}shot_mean"] = float(np.mean(accuracies))
        results[f"{shot}shot_std"] = float(np.std(accuracies))
    return results
