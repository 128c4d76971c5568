"""SilcModel: the EMA teacher, the center, training, presets, errors."""

import warnings

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import tiny_model
from conftest import to_numpy
from conftest import weights_numpy

from keras_silc import PRESETS
from keras_silc import SilcModel
from keras_silc.experiments import TABLE6_ROWS


def _fit_steps(model, batch, steps, **compile_kwargs):
    if not model.compiled:
        model.compile(**compile_kwargs)
    size = len(batch["text"])
    return model.fit(batch, batch_size=size, epochs=steps, shuffle=False, verbose=0).history


def assert_teacher_followed_ema(model, teacher_before, momentum):
    """teacher_after == momentum * teacher_before + (1 - momentum) * student_after."""
    for t0, s1, t1 in zip(
        teacher_before,
        weights_numpy(model.student.weights),
        weights_numpy(model.teacher.weights),
        strict=True,
    ):
        np.testing.assert_allclose(t1, momentum * t0 + (1 - momentum) * s1, rtol=1e-6, atol=1e-7)


def test_teacher_starts_as_a_copy_and_pairs_with_the_student(model):
    assert len(model.teacher.weights) == len(model.student.weights) > 0
    for t, s in zip(model.teacher.weights, model.student.weights, strict=True):
        assert t.shape == s.shape
        assert t.path.split("/", 2)[-1] == s.path.split("/", 2)[-1]
        np.testing.assert_array_equal(to_numpy(t), to_numpy(s))
        assert not t.trainable
    trainable = {id(v) for v in model.trainable_variables}
    assert not any(id(v) in trainable for v in model.teacher.weights)
    assert id(model.center) not in trainable
    images = model.preprocessor.example_batch(2)["image"]
    logits = model.student(images)
    assert tuple(logits.shape) == (2, model.head_config["num_prototypes"])
    np.testing.assert_allclose(to_numpy(model.teacher(images)), to_numpy(logits), atol=1e-6)


def test_one_step_follows_the_ema_and_center_rules(model, batch):
    teacher_before = weights_numpy(model.teacher.weights)
    flat_global = batch["global_crops"].reshape((-1,) + batch["global_crops"].shape[2:])
    teacher_logits = to_numpy(model.teacher(flat_global))
    student_before = weights_numpy(model.student.weights)
    _fit_steps(model, batch, 1, warmup_steps=0)
    student_after = weights_numpy(model.student.weights)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(student_after, student_before, strict=True))
    assert_teacher_followed_ema(model, teacher_before, 0.966)
    expected_center = 0.9 * 0.0 + 0.1 * teacher_logits.mean(axis=0)
    np.testing.assert_allclose(to_numpy(model.center), expected_center, rtol=1e-5, atol=1e-7)


def test_momentums_are_configurable():
    model = tiny_model(teacher_momentum=0.5, center_momentum=0.0)
    batch = model.preprocessor.example_batch(4, seed=1)
    flat_global = batch["global_crops"].reshape((-1,) + batch["global_crops"].shape[2:])
    teacher_logits = to_numpy(model.teacher(flat_global))
    teacher_before = weights_numpy(model.teacher.weights)
    _fit_steps(model, batch, 1, warmup_steps=0)
    assert_teacher_followed_ema(model, teacher_before, 0.5)
    np.testing.assert_allclose(to_numpy(model.center), teacher_logits.mean(0), rtol=1e-5, atol=1e-7)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_teacher_temperature_warm_up_is_linear_then_fixed():
    model = tiny_model(
        warmup_teacher_temperature=0.02,
        teacher_temperature=0.06,
        teacher_temperature_warmup_steps=4,
    )
    batch = model.preprocessor.example_batch(4, seed=2)
    num_global, num_local = batch["global_crops"].shape[1], batch["local_crops"].shape[1]
    teacher = to_numpy(
        model.teacher(batch["global_crops"].reshape((-1,) + batch["global_crops"].shape[2:]))
    )
    student = to_numpy(
        model.student(batch["local_crops"].reshape((-1,) + batch["local_crops"].shape[2:]))
    )
    history = _fit_steps(model, batch, 6, warmup_steps=0)
    np.testing.assert_allclose(
        history["teacher_temperature"], [0.02, 0.03, 0.04, 0.05, 0.06, 0.06], rtol=1e-5
    )
    assert float(to_numpy(model.distillation_steps)) == 6.0
    # The first step's loss is the cross-entropy at the starting tau_t (center still 0).
    p_t = np.exp(_log_softmax(teacher.reshape(4, num_global, -1) / 0.02))
    log_p_s = _log_softmax(student.reshape(4, num_local, -1) / 0.1)
    expected = -np.einsum("bgk,blk->b", p_t, log_p_s).mean() / (num_global * num_local)
    np.testing.assert_allclose(history["distillation_loss"][0], expected, rtol=1e-4)
    config = SilcModel.from_config(model.get_config()).get_config()
    assert config["teacher_temperature_warmup_steps"] == 4
    assert config["warmup_teacher_temperature"] == 0.02
    # Fixed tau_t (the default) adds no step counter and logs no schedule.
    assert tiny_model().distillation_steps is None
    with pytest.raises(ValueError, match="warmup_teacher_temperature"):
        tiny_model(teacher_temperature_warmup_steps=10)


def test_freeze_last_layer_holds_the_prototypes_for_the_first_steps():
    """DINO's freeze_last_layer: no gradient reaches the student's prototypes for the
    first N steps (plain SGD, so a frozen weight stays bit-equal), the rest of the head
    trains, and from step N on the prototypes train too; the same in micro-batches."""
    for accumulation in (1, 2):
        model = tiny_model(freeze_last_layer_steps=2, gradient_accumulation_steps=accumulation)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
        batch = model.preprocessor.example_batch(4, seed=4)
        head = model.student.head
        prototypes = [to_numpy(head.prototypes.kernel)]
        first_layer = [to_numpy(head.mlp[0].kernel)]
        for _ in range(3):
            model.train_on_batch(batch)
            prototypes.append(to_numpy(head.prototypes.kernel))
            first_layer.append(to_numpy(head.mlp[0].kernel))
        np.testing.assert_array_equal(prototypes[1], prototypes[0])
        np.testing.assert_array_equal(prototypes[2], prototypes[0])
        assert np.abs(prototypes[3] - prototypes[2]).max() > 1e-6
        assert all(
            np.abs(b - a).max() > 1e-6
            for a, b in zip(first_layer[:-1], first_layer[1:], strict=True)
        )
        assert "teacher_temperature" not in model.get_metrics_result()
    assert SilcModel.from_config(model.get_config()).freeze_last_layer_steps == 2
    with pytest.raises(ValueError, match="freeze_last_layer_steps"):
        tiny_model(freeze_last_layer_steps=-1)


def test_short_fit_lowers_the_loss_and_logs_every_metric(model, batch):
    history = _fit_steps(model, batch, 15, warmup_steps=2)
    for name in (
        "loss",
        "contrastive_loss",
        "distillation_loss",
        "temperature",
        "teacher_entropy",
        "student_teacher_kl",
    ):
        assert name in history and np.all(np.isfinite(history[name])), name
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    assert history["student_teacher_kl"][-1] < history["student_teacher_kl"][0]
    np.testing.assert_allclose(history["temperature"][0], 0.07, rtol=1e-3)


def test_jax_step_is_stateless_and_jit_compiled(model, batch):
    if BACKEND != "jax":
        pytest.skip("JAX-specific")
    import jax

    model.compile(warmup_steps=0)
    model.optimizer.build(model.trainable_variables)
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    # Tracing under jit fails on any host sync or in-place state change.
    logs, new_state = jax.jit(model.train_step)(state, batch)
    assert np.isfinite(float(logs["loss"]))
    # Nothing was written into the model's variables: the state came back instead.
    for v, before in zip(model.trainable_variables, state[0], strict=True):
        np.testing.assert_array_equal(np.asarray(v.value), np.asarray(before))
    teacher_ids = [id(v) for v in model.teacher.weights]
    positions = [i for i, v in enumerate(model.non_trainable_variables) if id(v) in teacher_ids]
    assert any(
        np.abs(np.asarray(new_state[1][i]) - np.asarray(state[1][i])).max() > 0 for i in positions
    )
    # The same step through fit() gives the same loss.
    history = model.fit(batch, batch_size=4, epochs=1, shuffle=False, verbose=0).history
    np.testing.assert_allclose(history["loss"][0], float(logs["loss"]), rtol=1e-5)


def test_tensorflow_traces_the_train_step_once(model, batch, monkeypatch):
    if BACKEND != "tensorflow":
        pytest.skip("TensorFlow-specific")
    # Keras builds the optimizer inside the first trace when no tf.distribute strategy is
    # set, and tf.function then traces again; the model builds it before tracing.
    traced = []
    train_step = type(model).train_step

    def counting(self, data):
        traced.append(1)
        return train_step(self, data)

    monkeypatch.setattr(type(model), "train_step", counting)
    model.compile(warmup_steps=0)
    model.fit(batch, batch_size=2, epochs=1, shuffle=False, verbose=0)  # two steps
    assert len(traced) == 1 and model.optimizer.built


@pytest.mark.parametrize("row", sorted(TABLE6_ROWS))
def test_every_table6_row_trains(row):
    model = tiny_model(**TABLE6_ROWS[row])
    batch = model.preprocessor.example_batch(4)
    needed = set(model.required_keys())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = _fit_steps(model, {k: v for k, v in batch.items() if k in needed}, 2)
    assert np.isfinite(history["loss"][-1])
    # Every trainable weight gets a gradient: without distillation the head is frozen.
    assert not [w for w in caught if "Gradients do not exist" in str(w.message)]
    head_trainable = [v for v in model.trainable_variables if "/head/" in v.path]
    assert bool(head_trainable) == (row == "silc")
    assert ("distillation_loss" in history) == (row == "silc")
    assert (model.teacher is not None) == ("ema" in row or row == "silc")
    if row == "clip":
        assert needed == {"image", "text"}


def test_ema_row_keeps_the_teacher_moving_without_distillation():
    model = tiny_model(**TABLE6_ROWS["clip+views+ema"])
    batch = model.preprocessor.example_batch(4)
    before = weights_numpy(model.teacher.weights)
    _fit_steps(model, batch, 1, warmup_steps=0)
    assert_teacher_followed_ema(model, before, 0.966)


def test_siglip_variant_trains_and_has_a_bias():
    model = tiny_model(contrastive_loss="siglip")
    assert model.max_logit_scale is None
    np.testing.assert_allclose(float(to_numpy(model.logit_scale())), 10.0, rtol=1e-6)
    history = _fit_steps(model, model.preprocessor.example_batch(4), 5, warmup_steps=0)
    assert "logit_bias" in history
    assert history["loss"][-1] < history["loss"][0]


def test_clip_logit_scale_is_clamped_at_100(model):
    model.log_logit_scale.assign(np.log(500.0))
    np.testing.assert_allclose(float(to_numpy(model.logit_scale())), 100.0, rtol=1e-6)


def test_encoders_return_normalised_embeddings(model):
    batch = model.preprocessor.example_batch(3)
    image = to_numpy(model.encode_image(batch["image"]))
    text = to_numpy(model.encode_text(batch["text"]))
    dense = to_numpy(model.dense_image_features(batch["image"]))
    assert image.shape == (3, 32) and text.shape == (3, 32)
    assert dense.shape == (3, 4, 4, 32)
    for x in (image, text, dense):
        np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0, rtol=1e-5)
    outputs = model.predict({"image": batch["image"], "text": batch["text"]}, verbose=0)
    np.testing.assert_allclose(outputs["image_embeddings"], image, atol=1e-5)


def test_example_batch_matches_the_documented_format(model):
    batch = model.preprocessor.example_batch(5, seed=3)
    assert batch["image"].shape == (5, 32, 32, 3)
    assert batch["global_crops"].shape == (5, 2, 32, 32, 3)
    assert batch["local_crops"].shape == (5, 4, 16, 16, 3)
    assert batch["text"].shape == (5, 16) and batch["text"].dtype == np.int32
    assert batch["image"].dtype == np.float32
    np.testing.assert_array_equal(
        batch["text"], model.preprocessor.example_batch(5, seed=3)["text"]
    )


def test_compile_defaults_to_the_paper_recipe(model):
    model.compile()
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.global_clipnorm == 1.0
    assert optimizer.weight_decay == 1e-4
    for v in model.trainable_variables:
        assert optimizer._use_weight_decay(v) == (v.name == "kernel"), v.path
    names = {v.name for v in model.trainable_variables if not optimizer._use_weight_decay(v)}
    assert {"bias", "gamma", "beta", "position_embedding", "probe", "log_logit_scale"} <= names


def test_presets_have_the_paper_geometry():
    for name in ("silc_s16", "silc_b16", "silc_l16"):
        config = PRESETS[name]["config"]
        assert config["vision"]["image_size"] == 256
        assert config["vision"]["patch_size"] == 16
        assert config["local_crop_size"] == 96
        assert config["head"]["num_prototypes"] == 65536
        assert config["num_global_crops"] == 2 and config["num_local_crops"] == 8
        assert config["teacher_momentum"] == 0.966 and config["center_momentum"] == 0.9
    widths = [PRESETS[n]["config"]["vision"]["width"] for n in ("silc_s16", "silc_b16", "silc_l16")]
    assert widths == [384, 768, 1024]


def test_from_preset_merges_nested_overrides():
    model = SilcModel.from_preset("silc_tiny", head={"num_prototypes": 64}, num_local_crops=2)
    assert model.head_config["num_prototypes"] == 64
    assert model.head_config["hidden_dim"] == PRESETS["silc_tiny"]["config"]["head"]["hidden_dim"]
    assert model.preprocessor.example_batch(2)["local_crops"].shape[1] == 2
    with pytest.raises(ValueError, match="Unknown preset 'silc_xxl'"):
        SilcModel.from_preset("silc_xxl")


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda b: b.pop("local_crops"), r"missing \['local_crops'\].*\(B, L, s, s, 3\)"),
        (lambda b: b.update(image=b["image"][:, :, :, 0]), r"batch\['image'\].*\(B, S, S, 3\)"),
        (
            lambda b: b.update(local_crops=b["local_crops"][:, :, :12, :12]),
            r"batch\['local_crops'\].*12x12.*patch size 8",
        ),
        (
            lambda b: b.update(text=b["text"].astype("float32")),
            r"batch\['text'\].*integer token ids",
        ),
        (
            lambda b: b.update(image=(b["image"] * 255).astype("uint8")),
            r"batch\['image'\].*divide uint8",
        ),
        (
            lambda b: b.update(global_crops=b["global_crops"][:, :, :24, :24]),
            r"batch\['global_crops'\].*share the size S",
        ),
        # Values, checked before fit on in-memory batches: an id past the embedding table
        # is NaN under JAX and an opaque IndexError under PyTorch.
        (
            lambda b: b.update(text=b["text"] + 10_000),
            r"batch\['text'\] hold the id \d+, but the text tower embeds only",
        ),
        (
            lambda b: b.update(image=b["image"] * 255.0),
            r"batch\['image'\].*0\.\.255 pixels: divide by 255",
        ),
    ],
)
def test_malformed_batches_get_clear_errors(model, batch, change, match):
    model.compile()
    change(batch)
    with pytest.raises(ValueError, match=match):
        model.fit(batch, batch_size=4, epochs=1, verbose=0)


def test_constructor_rejects_inconsistent_switches():
    with pytest.raises(ValueError, match="needs the EMA teacher"):
        tiny_model(ema_teacher=False, self_distillation=True)
    with pytest.raises(ValueError, match="contrastive_loss"):
        tiny_model(contrastive_loss="triplet")
    with pytest.raises(ValueError, match="local_crop_size=12"):
        tiny_model(local_crop_size=12)


def test_fit_accepts_tf_data_and_torch_dataloaders(model):
    import tensorflow as tf

    batch = model.preprocessor.example_batch(8)
    model.compile(warmup_steps=0)
    dataset = tf.data.Dataset.from_tensor_slices(batch).batch(4, drop_remainder=True)
    history = model.fit(dataset, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])

    import torch

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return {key: value[i] for key, value in batch.items()}

    # Keras reads a DataLoader's batches as tuples: wrap the dict as `(batch,)`.
    loader = torch.utils.data.DataLoader(
        Pairs(),
        batch_size=4,
        drop_last=True,
        collate_fn=lambda items: (torch.utils.data.default_collate(items),),
    )
    history = model.fit(loader, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


def test_compile_without_total_steps_drops_only_the_cooldown():
    config = {k: v for k, v in PRESETS["silc_tiny"]["config"].items() if k != "recipe"}
    model = SilcModel.from_config(config)  # default recipe: 50k warm-up and cool-down, no total
    with pytest.warns(UserWarning, match="without its cool-down"):
        model.compile()
    schedule = model.optimizer._learning_rate.get_config()
    assert schedule["cooldown_steps"] == 0 and schedule["warmup_steps"] == 50_000
    model.compile(total_steps=200_000)
    assert model.optimizer._learning_rate.get_config()["cooldown_steps"] == 50_000


def test_remat_recomputes_the_same_step():
    """Rematerialised blocks change memory, not numbers: one SILC step matches."""
    results = []
    for remat in (False, True):
        model = tiny_model(vision={"remat": remat}, text={"remat": remat})
        batch = model.preprocessor.example_batch(4, seed=0)
        history = _fit_steps(model, batch, 1, warmup_steps=0)
        results.append((history["loss"][0], weights_numpy(model.trainable_variables)))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    for with_remat, without in zip(results[1][1], results[0][1], strict=True):
        np.testing.assert_allclose(with_remat, without, rtol=1e-4, atol=1e-6)
    assert SilcModel.from_config(model.get_config()).vision_config["remat"] is True


@pytest.mark.skipif(BACKEND != "torch", reason="counts the tensors PyTorch's autograd saves")
def test_remat_keeps_fewer_activations_for_the_backward_pass():
    import torch

    def saved_bytes(remat):
        encoder = tiny_model(vision={"remat": remat, "depth": 4}).student.encoder
        seen, total = set(), [0]

        def pack(tensor):
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                total[0] += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = (encoder(torch.rand(8, 32, 32, 3)) ** 2).sum()
        loss.backward()
        return total[0]

    assert saved_bytes(True) < 0.5 * saved_bytes(False)


@pytest.mark.parametrize("contrastive_loss", ["clip", "siglip"])
def test_chunked_contrastive_loss_gives_the_same_step(contrastive_loss):
    results = []
    for chunk in (None, 3):
        model = tiny_model(contrastive_loss=contrastive_loss, contrastive_chunk_size=chunk)
        batch = model.preprocessor.example_batch(8, seed=0)
        history = _fit_steps(model, batch, 1, warmup_steps=0)
        results.append((history["contrastive_loss"][0], weights_numpy(model.trainable_variables)))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    for chunked, dense in zip(results[1][1], results[0][1], strict=True):
        np.testing.assert_allclose(chunked, dense, rtol=1e-4, atol=1e-6)


def _one_sgd_step(batch, **overrides):
    """Loss, logs and every weight (student, teacher, center, ...) after one SGD step."""
    model = tiny_model(**overrides)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
    logs = model.train_on_batch(batch, return_dict=True)
    return {k: float(v) for k, v in logs.items()}, weights_numpy(model.weights)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"contrastive_loss": "siglip", "contrastive_chunk_size": 3}],
    ids=["silc_c", "silc_s_chunked"],
)
def test_gradient_accumulation_gives_the_full_batch_step(overrides):
    """Micro-batches change memory, not the step: loss, logs, student, teacher and center
    equal the full-batch step's (a large SGD step, so that a missing or doubled gradient
    term shows)."""
    batch = tiny_model().preprocessor.example_batch(12, seed=3)
    full_logs, full_weights = _one_sgd_step(batch, **overrides)
    logs, weights = _one_sgd_step(batch, gradient_accumulation_steps=3, **overrides)
    assert logs.keys() == full_logs.keys()
    for key in full_logs:
        np.testing.assert_allclose(logs[key], full_logs[key], rtol=1e-5, err_msg=key)
    before = weights_numpy(tiny_model(**overrides).weights)
    moved = 0
    for start, full, accumulated in zip(before, full_weights, weights, strict=True):
        np.testing.assert_allclose(accumulated - start, full - start, rtol=1e-3, atol=1e-6)
        moved += np.abs(full - start).max() > 1e-4
    assert moved > len(before) // 2  # the step moved most weights


def test_gradient_accumulation_errors_and_config():
    config = tiny_model().get_config()
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="gradient_accumulation_steps must be a positive int"):
            SilcModel.from_config({**config, "gradient_accumulation_steps": bad})
        # from_preset refuses it before the model is built.
        with pytest.raises(ValueError, match="override gradient_accumulation_steps="):
            tiny_model(gradient_accumulation_steps=bad)
    assert tiny_model(gradient_accumulation_steps=np.int64(2)).gradient_accumulation_steps == 2
    model = tiny_model(gradient_accumulation_steps=4)
    assert SilcModel.from_config(model.get_config()).gradient_accumulation_steps == 4
    model.compile()
    with pytest.raises(ValueError, match="must divide the batch size.*6 examples"):
        model.train_on_batch(model.preprocessor.example_batch(6))


def _hidden_mean(tower, crops, micro=None):
    """Batch mean of the head's first hidden layer (before its batch norm) on `crops`
    (B, N, H, W, 3), over examples `micro` (all by default) and their N crops."""
    crops = crops if micro is None else crops[micro]
    flat = crops.reshape((-1,) + crops.shape[2:])
    return to_numpy(tower.head.mlp[0](tower.encoder(flat))).mean(axis=0)


def test_batch_normalized_head_uses_each_batch_statistics():
    """head={"batch_norm": True}: in train_step the teacher (frozen for the optimizer)
    and the student normalise with their batch's statistics and move their averages;
    evaluate moves nothing."""
    model = tiny_model(head={"batch_norm": True})
    batch = model.preprocessor.example_batch(4, seed=0)
    flat_global = batch["global_crops"].reshape((-1,) + batch["global_crops"].shape[2:])
    teacher_state = weights_numpy(model.teacher.weights)
    inference_logits = to_numpy(model.teacher(flat_global))
    training_logits = to_numpy(model.teacher(flat_global, training=True))
    model.teacher.set_weights(teacher_state)
    assert np.abs(training_logits - inference_logits).max() > 1e-2  # the test can tell them apart
    student_mean = _hidden_mean(model.student, batch["local_crops"])
    _fit_steps(model, batch, 1, warmup_steps=0)
    np.testing.assert_allclose(
        to_numpy(model.center), 0.1 * training_logits.mean(0), rtol=1e-4, atol=1e-6
    )
    norm = model.student.head.norms[0]
    np.testing.assert_allclose(to_numpy(norm.moving_mean), 0.1 * student_mean, rtol=1e-4, atol=1e-6)
    state = weights_numpy(model.non_trainable_weights)
    model.evaluate(batch, batch_size=4, verbose=0)
    for before, after in zip(state, weights_numpy(model.non_trainable_weights), strict=True):
        np.testing.assert_array_equal(after, before)


def test_batch_normalized_head_moves_its_statistics_per_micro_batch():
    """With gradient accumulation each micro-batch normalises with its own statistics
    and moves the averages once, in micro-batch order, on every backend."""
    model = tiny_model(head={"batch_norm": True}, gradient_accumulation_steps=2)
    batch = model.preprocessor.example_batch(4, seed=1)
    first, second = (_hidden_mean(model.student, batch["local_crops"], [j, j + 2]) for j in (0, 1))
    _fit_steps(model, batch, 1, warmup_steps=0)
    np.testing.assert_allclose(
        to_numpy(model.student.head.norms[0].moving_mean),
        0.9 * (0.1 * first) + 0.1 * second,
        rtol=1e-4,
        atol=1e-6,
    )


def test_predict_and_call_take_a_dict_and_a_refusal_leaves_the_model_usable():
    model = tiny_model()
    size = model.vision_config["image_size"]
    images = np.random.default_rng(0).random((2, size, size, 3), dtype="float32")
    for bad in (images, [images], {"images": images}):
        with pytest.raises(ValueError, match=r"SilcModel.predict takes \{'image'"):
            model.predict(bad, verbose=0)
        with pytest.raises(ValueError, match=r"SilcModel takes \{'image'"):
            model(bad)
    # Under JAX an error inside the first predict step would leave the variables unset.
    expected = to_numpy(model.encode_image(images))
    predicted = model.predict({"image": images}, verbose=0)["image_embeddings"]
    np.testing.assert_allclose(predicted, expected, atol=1e-5)


def test_a_batch_refused_inside_fit_leaves_the_model_usable():
    model = tiny_model()
    model.compile(learning_rate=1e-3, total_steps=10, warmup_steps=1)
    batch = model.preprocessor.example_batch(4, seed=0)
    expected = to_numpy(model.encode_text(batch["text"]))
    incomplete = {k: v for k, v in batch.items() if k != "local_crops"}
    with pytest.raises(ValueError, match="local_crops"):
        model.fit(incomplete, batch_size=4, epochs=1, verbose=0)
    # Under JAX the variables are detached at the first step; a step that fails while it is
    # traced must not leave them unset.
    np.testing.assert_allclose(to_numpy(model.encode_text(batch["text"])), expected, atol=1e-6)
    history = model.fit(batch, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_fit_refuses_what_is_not_a_training_batch():
    from keras_silc import data

    model = tiny_model()
    model.compile(learning_rate=1e-3, total_steps=10, warmup_steps=1)
    batch = model.preprocessor.example_batch(4, seed=0)
    size = model.vision_config["image_size"]
    pairs = data.from_arrays(np.zeros((4, size, size, 3), np.uint8), ["a bag"] * 4)
    with pytest.raises(ValueError, match="dataset of image-text pairs.*training_dataset"):
        model.fit(pairs.batch(2), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="strings under 'caption'.*preprocessor.tokenize"):
        model.fit({**batch, "caption": np.array(["a"] * 4)}, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="one row per example; got .*'text': 3"):
        model.fit({**batch, "text": batch["text"][:3]}, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="no rows"):
        model.fit({k: v[:0] for k, v in batch.items()}, batch_size=4, verbose=0)


def test_captions_and_h5_files_are_refused_with_the_way_to_do_it(tmp_path):
    model = tiny_model()
    with pytest.raises(ValueError, match=r"not captions: model.encode_text\(model.preprocessor"):
        model.encode_text(["a red bag", "a shoe"])
    # Keras's legacy HDF5 save failed deep inside h5py and left a partial file.
    with pytest.raises(ValueError, match="Save to a '.keras' file, or use save_weights"):
        model.save(str(tmp_path / "model.h5"))
    assert not (tmp_path / "model.h5").exists()
    with pytest.raises(ValueError, match="load_weights must be True or False, got 'no'"):
        SilcModel.from_preset("silc_tiny", load_weights="no")
