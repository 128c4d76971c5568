"""The Table 6 evaluation's arrays, pinned: no change to the scene generator or to
`evaluate_fashion` moves the test set silently.

`evaluate_fashion` is run with its four evaluators replaced by recorders, so that the arrays
are exactly those it hands them: the test items (zero-shot and the few-shot probes' test
set), the few-shot pool, and the test scenes with their captions and masks. Their sha256
digests were computed with the code of December 2026 and are hard-coded on purpose: a
change that moves them must update them here, and says so in its commit (the recorded
runs in docs/runs/ were evaluated on these arrays).
"""

import hashlib

import numpy as np
import pytest

from keras_silc import evaluation

# The evaluation of the Table 6 runs: the one import of it in this file.
from keras_silc.experiments import fashion as demo

pytestmark = pytest.mark.backend_independent

# (items, scenes) -> sha256 of (items, pool, scenes). Size of the table: 10,000 items (the
# whole test split) and 1,000 scenes (reproduce_table6's defaults); and a reduced size.
PINS = {
    (200, 50): (
        "3ec81bd4fee791d6f8320fc327582870edee2ed6a679a44ea683942f1167d5ad",
        "600042fcb3c010150519957e874d1129eed06fcb7f841bc130ef255ad48ec552",
        "de2309b65487a325fcd72a8f4e717836e6b9fa15253e672808fe12937926009c",
    ),
    (10_000, 1000): (
        "887b8d678fa689004a8d8e1d110b909f6eca694c5ef18bdb4ab382d205a08494",
        "600042fcb3c010150519957e874d1129eed06fcb7f841bc130ef255ad48ec552",
        "b4eb6195382c01cbd3d407f0eaede0cda947cbe0cff1726b14c74bd5f2dd209b",
    ),
}


def digest(*arrays):
    """sha256 over each array's shape, dtype and bytes (strings as fixed-width unicode)."""
    sha = hashlib.sha256()
    for array in arrays:
        array = np.asarray(array)
        if array.dtype == object:
            array = array.astype(str)
        sha.update(str((array.shape, array.dtype.str)).encode())
        sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()


def evaluation_arrays(monkeypatch, num_items, num_scenes):
    """What `demo.evaluate_fashion` hands its evaluators, by name."""
    seen = {}

    def zero_shot(model, tokenizer, images, labels, classes, templates=None):
        seen["items"] = (images, labels)
        return {}

    def few_shot(model, train_images, train_labels, images, labels, shots, seeds):
        seen["pool"] = (train_images, train_labels)
        seen["probe_items"] = (images, labels)
        return {}

    def retrieval(model, tokenizer, images, captions):
        seen["scenes"] = (images, captions)
        return {}

    def segmentation(model, tokenizer, images, masks, classes, templates=None):
        seen["segmentation"] = (images, masks)
        return {}

    monkeypatch.setattr(evaluation, "zero_shot_classification", zero_shot)
    monkeypatch.setattr(evaluation, "few_shot_classification", few_shot)
    monkeypatch.setattr(evaluation, "retrieval", retrieval)
    monkeypatch.setattr(evaluation, "zero_shot_segmentation", segmentation)

    class Model:  # what evaluate_fashion reads of a model besides the evaluators
        tokenizer = None
        vision_config = {"image_size": 64}

    demo.evaluate_fashion(Model(), num_items=num_items, num_scenes=num_scenes, shots=(1, 10))
    return seen


@pytest.mark.parametrize("num_items,num_scenes", sorted(PINS))
def test_table6_evaluation_arrays_are_pinned(monkeypatch, num_items, num_scenes):
    seen = evaluation_arrays(monkeypatch, num_items, num_scenes)
    items, pool, scenes = seen["items"], seen["pool"], seen["scenes"]
    assert items[0].shape == (num_items, 64, 64, 3) and items[0].dtype == np.uint8
    assert pool[0].shape == (500, 64, 64, 3)
    assert scenes[1].shape == (num_scenes, 2)
    # The probes are tested on the zero-shot items; the masks belong to the same scenes.
    assert digest(*seen["probe_items"]) == digest(*items)
    np.testing.assert_array_equal(seen["segmentation"][0], scenes[0])
    masks = seen["segmentation"][1]
    assert masks.shape == (num_scenes, 64, 64)
    assert (digest(*items), digest(*pool), digest(*scenes, masks)) == PINS[(num_items, num_scenes)]
