"""Fine-tuning controls: locked towers (LiT), unlocked last blocks, layer-wise lr decay."""

import re

import keras
import numpy as np
import pytest
from conftest import tiny_model
from conftest import to_numpy

from keras_silc import SilcModel
from keras_silc.trainers.common import apply_optimizer

LR = 0.5
DECAY = 0.5
DEPTH = 2  # silc_tiny's blocks per tower
CONTRASTIVE_ONLY = {
    "self_distillation": False,
    "ema_teacher": False,
    "multi_view_contrastive": False,
}


def _expected_scale(path):
    """BEiT's layer-wise factor of a weight, read off its path: block i of L gets
    DECAY^(L - i), the embeddings DECAY^(L + 1), the rest 1."""
    block = re.match(r"(student/encoder|text_encoder)/block_(\d+)/", path)
    if block:
        return DECAY ** (DEPTH - int(block.group(2)))
    if re.match(
        r"student/encoder/(patch|position)_embedding/|text_encoder/(token|position)_", path
    ):
        return DECAY ** (DEPTH + 1)
    return 1.0


def _one_sgd_step(**overrides):
    """(model, {path: step}) for every weight of the towers and the head."""
    model = tiny_model(**overrides)
    weights = model.student.weights + model.text_encoder.weights
    before = {v.path: to_numpy(v) for v in weights}
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR))
    model.train_on_batch(model.preprocessor.example_batch(4, seed=0))
    return model, {v.path: to_numpy(v) - before[v.path] for v in weights}


@pytest.fixture(scope="module")
def steps():
    """One SGD step of a model whose text tower is locked but for its last block, without
    and with layer-wise decay. (Contrastive only, to keep the compiled steps small: the
    distillation terms add nothing to what is tested.)"""
    locks = {"lock_text": True, "unlocked_text_blocks": 1, **CONTRASTIVE_ONLY}
    plain_model, plain = _one_sgd_step(**locks)
    _, decayed = _one_sgd_step(layer_decay=DECAY, **locks)
    return plain_model, plain, decayed


def test_a_locked_tower_stays_put_and_its_unlocked_blocks_train(steps):
    model, plain, _ = steps
    trainable = {v.path for v in model.trainable_variables}
    for path, step in plain.items():
        text_top = re.match(r"text_encoder/(block_1|final_norm|projection)/", path)
        if path.startswith("student/head/"):
            should_train = False  # no distillation loss: frozen
        else:
            should_train = not path.startswith("text_encoder/") or text_top is not None
        assert (path in trainable) == should_train, path
        assert bool(np.any(step != 0)) == should_train, path
    assert model.text_encoder.blocks[1].trainable_weights
    assert not model.text_encoder.blocks[0].trainable_weights


def test_layer_decay_scales_each_blocks_sgd_step(steps):
    """SGD's step is -lr * gradient: with decay it must be -lr * DECAY^k * gradient, the
    gradient read off the undecayed step (same weights, same batch)."""
    _, plain, decayed = steps
    scales = set()
    for path, step in plain.items():
        gradient = -step / LR
        scale = _expected_scale(path) if np.any(step) else 0.0
        scales.add(scale)
        np.testing.assert_allclose(
            decayed[path], -LR * scale * gradient, rtol=1e-4, atol=1e-7, err_msg=path
        )
    # Image: embeddings, blocks 0 and 1, the top; text: block 1, the top (the rest locked).
    assert scales == {0.0, 0.125, 0.25, 0.5, 1.0}


def test_layer_decay_scales_adams_step_not_its_gradient():
    """Adam's first step is about lr * sign(gradient), whatever the gradient's scale: only
    scaling the step, as a per-layer learning rate does, makes it s times smaller (weight
    decay included)."""
    grads = [np.array([0.3, -2.0, 1e-3], np.float32), np.array([[4.0, -0.5]], np.float32)]
    starts = [np.array([1.0, 2.0, -1.0], np.float32), np.array([[0.5, -3.0]], np.float32)]
    results = []
    for scales in (None, [0.25, 1.0]):
        variables = [keras.Variable(start) for start in starts]
        optimizer = keras.optimizers.AdamW(learning_rate=1e-2, weight_decay=0.1)
        optimizer.build(variables)
        apply_optimizer(
            optimizer, [keras.ops.convert_to_tensor(g) for g in grads], variables, scales
        )
        results.append([to_numpy(v) - start for v, start in zip(variables, starts, strict=True)])
    plain, scaled = results
    # (Steps of ~1e-3 on weights of ~1: float32 reads them to ~1e-7.)
    np.testing.assert_allclose(scaled[0], 0.25 * plain[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scaled[1], plain[1], rtol=1e-4, atol=1e-6)


def test_lit_freezes_the_image_tower_and_its_distillation_head():
    model = tiny_model(lock_image=True, **CONTRASTIVE_ONLY)
    trainable = {v.path for v in model.trainable_variables}
    assert not any(path.startswith("student/") for path in trainable)
    assert {v.path for v in model.text_encoder.weights} <= trainable
    assert model.log_logit_scale.trainable


def test_fine_tuning_controls_round_trip_through_the_config(tmp_path):
    model = tiny_model(lock_image=True, unlocked_image_blocks=2, layer_decay=0.75)
    config = model.get_config()
    assert (config["lock_image"], config["unlocked_image_blocks"], config["layer_decay"]) == (
        True,
        2,
        0.75,
    )
    assert not config["lock_text"] and config["unlocked_text_blocks"] == 0
    # Two unlocked blocks of two: only the embeddings are frozen.
    frozen = {v.path for v in model.student.encoder.weights if not v.trainable}
    assert frozen == {
        "student/encoder/patch_embedding/kernel",
        "student/encoder/patch_embedding/bias",
        "student/encoder/position_embedding/position_embedding",
    }
    rebuilt = SilcModel.from_config(config)
    assert [v.path for v in rebuilt.trainable_variables] == [
        v.path for v in model.trainable_variables
    ]
    assert rebuilt.learning_rate_scales() == model.learning_rate_scales()
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert reloaded.layer_decay == 0.75 and reloaded.unlocked_image_blocks == 2
    assert [v.path for v in reloaded.trainable_variables] == [
        v.path for v in model.trainable_variables
    ]


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"lock_image": True}, "lock_image=True freezes the whole image tower.*self_distillation"),
        ({"unlocked_text_blocks": 1}, r"unlocked_text_blocks=1 only applies.*lock_text=True"),
        ({"lock_text": True, "unlocked_text_blocks": 3}, "the text tower has 2 blocks"),
        (
            {"lock_image": True, "unlocked_image_blocks": -1},
            "unlocked_image_blocks must be a whole number",
        ),
        ({"lock_text": "yes"}, "lock_text must be True or False"),
        ({"layer_decay": 0.0}, r"layer_decay must be None or a float in \(0, 1\]"),
        ({"layer_decay": 1.5}, r"layer_decay must be None or a float in \(0, 1\]"),
    ],
)
def test_bad_fine_tuning_controls_are_refused(overrides, match):
    # The model's own checks (from_preset checks names, types and ranges before them).
    with pytest.raises(ValueError, match=match):
        SilcModel.from_config({**tiny_model().get_config(), **overrides})
    with pytest.raises(ValueError, match=match + "|from_preset override"):
        tiny_model(**overrides)


def test_a_tower_that_does_not_exist_is_named():
    with pytest.raises(ValueError, match="no 'audio' tower; its towers are"):
        tiny_model().lock_tower("audio")
