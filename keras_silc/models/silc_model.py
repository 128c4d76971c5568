"""`SilcModel`: two towers, an EMA teacher, and SILC's objective in one place.

Read the "objective" section top to bottom for the method (paper Sec. 3): `compute_losses`
assembles it from the contrastive terms and the local-to-global distillation terms, and
`update_state_after_step` moves the teacher and the center. The arguments' checks and
defaults live in `silc_config.py`; the backend plumbing (batch checks, gradients, the
optimizer, stateless JAX, metrics) in `keras_silc/trainers/`.
"""

import math

import keras
from keras import ops

from keras_silc import losses
from keras_silc.checks import check_model_inputs
from keras_silc.checks import check_rank
from keras_silc.checks import check_token_ids
from keras_silc.layers.distillation_head import l2_normalize
from keras_silc.models.fine_tuning import FineTuning
from keras_silc.models.image_tower import ImageTower
from keras_silc.models.presets import PresetLoading
from keras_silc.models.presets import merge_config
from keras_silc.models.silc_config import DEFAULT_RECIPE
from keras_silc.models.silc_config import SCALAR_ARGUMENTS
from keras_silc.models.silc_config import attach_preprocessor
from keras_silc.models.silc_config import check_arguments
from keras_silc.models.silc_config import compile_optimizer
from keras_silc.models.silc_config import constructor_arguments
from keras_silc.models.silc_config import metric_names
from keras_silc.models.silc_config import prepare_optimizer
from keras_silc.models.silc_config import preprocessor_from
from keras_silc.models.text_encoder import TextEncoder
from keras_silc.models.vision_encoder import float_pixels
from keras_silc.models.vision_encoder import on_batch
from keras_silc.trainers import SilcTrainer


def per_view(fn, views, **kwargs):
    """`fn` on (B, V, ...) views as one (B * V, ...) batch, its output back as (B, V, D)."""
    outputs = fn(ops.reshape(views, (-1,) + tuple(views.shape[2:])), **kwargs)
    return ops.reshape(outputs, (-1, views.shape[1], outputs.shape[-1]))


@keras.saving.register_keras_serializable(package="keras_silc")
class SilcModel(PresetLoading, FineTuning, SilcTrainer, keras.Model):
    """SILC: contrastive image-text pretraining with local-to-global self-distillation.

    Train with `model.compile()` (the paper's recipe) and `model.fit(dataset)` on batches of
    the format in `keras_silc.batch_format` (full image, global crops, local crops, token
    ids), which `keras_silc.data.training_dataset(pairs, model.preprocessor, batch_size)`
    makes from image-text pairs.

    Args:
        vision: dict. `VisionEncoder` arguments (image_size, patch_size, width, ...).
        text: dict. `TextEncoder` arguments.
        head: dict. `DistillationHead` arguments (num_prototypes K, hidden_dim, ...).
        contrastive_loss: "clip" (SILC-C) or "siglip" (SILC-S).
        multi_view_contrastive: bool. Also align each global crop with the text, each
            as its own B x B problem (the paper requires this for SILC).
        ema_teacher: bool. Keep an EMA teacher of the image tower and head.
        self_distillation: bool. Add the local-to-global distillation loss; needs
            `ema_teacher`.
        distillation_weight: float. Weight of the distillation loss. Defaults to 1.
        student_temperature: float. tau_s. Defaults to 0.1.
        teacher_temperature: float. tau_t. Defaults to 0.04.
        warmup_teacher_temperature: float or None. DINO's warm-up: tau_t moves linearly
            from here to `teacher_temperature` over `teacher_temperature_warmup_steps`
            steps (0, the default and the paper's choice: tau_t fixed).
        teacher_temperature_warmup_steps: int. Defaults to 0.
        freeze_last_layer_steps: int. DINO's `freeze_last_layer`: no gradient to the
            student's prototypes for this many first steps. Defaults to 0.
        teacher_momentum: float. lambda in `teacher = lambda teacher + (1 - lambda)
            student`, fixed for the whole run. Defaults to 0.966.
        center_momentum: float. m in `center = m center + (1 - m) mean(teacher)`.
            Defaults to 0.9.
        logit_scale_init: float or None. Initial multiplier t (CLIP: 1/0.07, SigLIP:
            10 by default).
        logit_bias_init: float or None. Initial SigLIP bias (-10 by default).
        max_logit_scale: float or None. Clamp on t (CLIP: 100 by default; SigLIP:
            none).
        contrastive_chunk_size: int or None. The contrastive loss this many rows at a time:
            same values and gradients, memory linear in the batch. Defaults to None.
        gradient_accumulation_steps: int. M: each step in M micro-batches of B / M (GradCache,
            `keras_silc.trainers.micro_batches`), with the full batch's exact objective.
            Defaults to 1.
        inference_tower: "student" or "teacher". The image tower that
            `encode_image` and `dense_image_features` use.
        lock_image, lock_text: bool. Freeze the image (student) or text tower, as LiT
            does. Defaults to False. `lock_image` with self-distillation needs
            `unlocked_image_blocks > 0`.
        unlocked_image_blocks, unlocked_text_blocks: int. A locked tower's last N blocks
            (and what follows them) still train. Defaults to 0.
        layer_decay: float in (0, 1] or None. Layer-wise learning-rate decay: block i of
            L learns at `lr * layer_decay ** (L - i)`, the embeddings at
            `layer_decay ** (L + 1)`. See `keras_silc.models.fine_tuning`.
        recipe: dict. Defaults for `compile()`: learning_rate, warmup_steps,
            cooldown_steps, total_steps, timescale, weight_decay, beta_1, beta_2,
            global_clipnorm.
        preprocessor: a `keras_silc.SilcPreprocessor` (or None): the tokenizer, the views'
            geometry and augmentation. Saved with the model, so a reloaded model tokenizes
            and crops exactly as before. `from_preset` builds one from the preset.
    """

    def __init__(
        self,
        vision,
        text,
        head,
        contrastive_loss="clip",
        multi_view_contrastive=True,
        ema_teacher=True,
        self_distillation=True,
        distillation_weight=1.0,
        student_temperature=0.1,
        teacher_temperature=0.04,
        warmup_teacher_temperature=None,
        teacher_temperature_warmup_steps=0,
        freeze_last_layer_steps=0,
        teacher_momentum=0.966,
        center_momentum=0.9,
        logit_scale_init=None,
        logit_bias_init=None,
        max_logit_scale=None,
        contrastive_chunk_size=None,
        gradient_accumulation_steps=1,
        inference_tower="student",
        recipe=None,
        preprocessor=None,
        lock_image=False,
        lock_text=False,
        unlocked_image_blocks=0,
        unlocked_text_blocks=0,
        layer_decay=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_arguments(locals())
        if "output_dim" not in text:
            # The text tower must land in the image tower's space.
            text = {**text, "output_dim": vision.get("output_dim") or vision.get("width", 768)}
        self.vision_config, self.text_config, self.head_config = (
            dict(vision),
            dict(text),
            dict(head),
        )
        self.contrastive_loss = contrastive_loss
        self.multi_view_contrastive = multi_view_contrastive
        self.ema_teacher = ema_teacher
        self.self_distillation = self_distillation
        self.distillation_weight = distillation_weight
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.warmup_teacher_temperature = warmup_teacher_temperature
        self.teacher_temperature_warmup_steps = int(teacher_temperature_warmup_steps)
        self.freeze_last_layer_steps = int(freeze_last_layer_steps)
        self.teacher_momentum = teacher_momentum
        self.center_momentum = center_momentum
        siglip = contrastive_loss == "siglip"
        default_scale = 10.0 if siglip else 1.0 / 0.07
        self.logit_scale_init = default_scale if logit_scale_init is None else logit_scale_init
        self.logit_bias_init = logit_bias_init if logit_bias_init is not None else -10.0
        default_max = None if siglip else 100.0
        self.max_logit_scale = default_max if max_logit_scale is None else max_logit_scale
        self.inference_tower = inference_tower
        self.contrastive_chunk_size = contrastive_chunk_size
        self.gradient_accumulation_steps = int(gradient_accumulation_steps)
        self.recipe = merge_config(DEFAULT_RECIPE, recipe or {})
        preprocessor = preprocessor_from(preprocessor)
        self.preprocessor = preprocessor

        # Layers and state.
        dtype = self.dtype_policy
        self.student = ImageTower(self.vision_config, self.head_config, name="student", dtype=dtype)
        if not self_distillation:
            # No loss reaches the head: frozen, it stays out of the optimizer (no
            # "gradients do not exist" warnings, no weight decay on unused weights).
            self.student.head.trainable = False
        self.text_encoder = TextEncoder(**self.text_config, name="text_encoder", dtype=dtype)
        self.text_encoder.build()
        if self.student.encoder.embedding_dim != self.text_encoder.embedding_dim:
            raise ValueError(
                f"The image embedding size ({self.student.encoder.embedding_dim}) and the "
                f"text embedding size ({self.text_encoder.embedding_dim}) differ; set "
                "vision['output_dim'] and text['output_dim'] to the same J."
            )
        self.log_logit_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(self.logit_scale_init)),
            name="log_logit_scale",
        )
        self.logit_bias = (
            self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(self.logit_bias_init),
                name="logit_bias",
            )
            if siglip
            else None
        )
        self.teacher = None
        if ema_teacher:
            self.teacher = ImageTower(
                self.vision_config, self.head_config, name="teacher", dtype=dtype
            )
            self.teacher.trainable = False
            for teacher_weight, student_weight in zip(
                self.teacher.weights, self.student.weights, strict=True
            ):
                teacher_weight.assign(ops.copy(student_weight.value))
        self.center = (
            self.add_weight(
                shape=(self.head_config["num_prototypes"],),
                initializer="zeros",
                trainable=False,
                name="center",
            )
            if self_distillation
            else None
        )
        # Steps taken, for the tau_t warm-up and the frozen last layer (only where there is one).
        # Not optimizer.iterations: JAX's test_step gets no optimizer state, so it would be stale.
        self.distillation_steps = (
            self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="distillation_steps"
            )
            if self_distillation
            and (self.teacher_temperature_warmup_steps or self.freeze_last_layer_steps)
            else None
        )
        self.configure_fine_tuning(
            lock_image, lock_text, unlocked_image_blocks, unlocked_text_blocks, layer_decay
        )
        attach_preprocessor(preprocessor, self.text_encoder)
        self.trackers = [keras.metrics.Mean(name=name) for name in metric_names(self)]
        self.built = True

    @property
    def tokenizer(self):
        """The preprocessor's tokenizer (None without one)."""
        return getattr(self.preprocessor, "tokenizer", None)

    @classmethod
    def from_config(cls, config):
        """Rebuilds a model from `get_config()`, or from a preset-style config whose view
        geometry (num_global_crops, num_local_crops, local_crop_size) and tokenizer sit
        beside the model's arguments: those make the model's preprocessor."""
        return cls(**constructor_arguments(config))

    @property
    def vision_encoder(self):
        """The student's vision encoder: the image tower of the contrastive model."""
        return self.student.encoder

    # --------------------------------------------------------------- objective
    def compute_losses(self, batch, training=True):
        """SILC's objective on one batch (paper Sec. 3). Returns (total_loss, aux dict).

        1. Image-text contrastive: the full image (and, with `multi_view_contrastive`, each
           global crop) is aligned with its caption, one B x B problem per view.
        2. Local-to-global self-distillation (DINO's loss): the EMA teacher scores the global
           crops, the student the local crops, and the student's distribution at tau_s is
           pulled toward the teacher's, centred and sharpened at tau_t.

        total = contrastive + distillation_weight * distillation. After the optimizer step,
        `update_state_after_step` moves the teacher and the center. aux holds the terms to
        log and `teacher_logits_mean`, the (K,) batch mean of the teacher's logits that moves
        the center. `training` (False in `test_step`) only matters to a batch-normalised head.
        The three parts are separate methods because gradient accumulation
        (`trainers/micro_batches.py`) calls them one by one.
        """
        image_embeddings, text_embeddings = self.contrastive_embeddings(batch)
        total, aux = self.contrastive_terms(image_embeddings, text_embeddings)
        if self.self_distillation:
            distillation = self.distillation_terms(batch, training=training)
            total = total + self.distillation_weight * distillation["distillation_loss"]
            aux.update(distillation)
        aux["loss"] = total
        return total, aux

    def contrastive_embeddings(self, batch):
        """Normalised (B, V, J) student embeddings of the V contrastive views (the full
        image, then each global crop with `multi_view_contrastive`) and (B, J) text
        embeddings."""
        images = batch["image"]
        views = images[:, None]
        if self.multi_view_contrastive:
            views = ops.concatenate([views, ops.cast(batch["global_crops"], images.dtype)], axis=1)
        text_embeddings = l2_normalize(self.text_encoder(batch["text"]))
        image_embeddings = per_view(lambda x: l2_normalize(self.student.encoder(x)), views)
        return image_embeddings, text_embeddings

    def contrastive_terms(self, image_embeddings, text_embeddings):
        """The contrastive loss (CLIP's softmax or SigLIP's sigmoid) of every view with the
        text, each view a B x B problem at the same batch size, averaged. Returns (loss, aux)."""
        logit_scale = self.logit_scale()
        num_views = image_embeddings.shape[1]
        contrastive = sum(
            losses.contrastive_loss(
                self.contrastive_loss,
                image_embeddings[:, v],
                text_embeddings,
                logit_scale,
                self.logit_bias,
                self.contrastive_chunk_size,
            )
            for v in range(num_views)
        ) / float(num_views)
        aux = {"contrastive_loss": contrastive, "temperature": 1.0 / logit_scale}
        if self.logit_bias is not None:
            aux["logit_bias"] = ops.cast(self.logit_bias, "float32")
        return contrastive, aux

    def distillation_terms(self, batch, training=True):
        """Local-to-global self-distillation over every (global crop, local crop) pair of an
        example: the loss and the terms to log. Every term is a mean over examples, so it
        splits over micro-batches."""
        # The teacher sees the global crops, without gradient. Like DINO's teacher it is in
        # training mode: a batch-normalised head uses the statistics of the global crops.
        teacher_logits = per_view(self.teacher, batch["global_crops"], training=training)
        teacher_logits = ops.stop_gradient(ops.cast(teacher_logits, "float32"))
        # The student sees the local crops; its prototypes may be frozen for the first steps.
        student_logits = per_view(
            self.student,
            batch["local_crops"],
            training=training,
            prototype_gradient=self.prototype_gradient(),
        )
        # Cross-entropy from the teacher's distribution, centred and sharpened at tau_t, to
        # the student's at tau_s.
        teacher_temperature = self.current_teacher_temperature()
        distillation, teacher_entropy = losses.distillation_terms(
            student_logits,
            teacher_logits,
            self.center,
            self.student_temperature,
            teacher_temperature,
        )
        terms = {
            "distillation_loss": distillation,
            "teacher_entropy": teacher_entropy,
            "student_teacher_kl": distillation - teacher_entropy,
            "teacher_logits_mean": ops.mean(teacher_logits, axis=(0, 1)),
        }
        if self.teacher_temperature_warmup_steps:
            terms["teacher_temperature"] = teacher_temperature
        return terms

    def logit_scale(self):
        """The contrastive loss's multiplier t = exp(log t), clamped at `max_logit_scale`."""
        log_scale = ops.cast(self.log_logit_scale, "float32")
        if self.max_logit_scale:
            log_scale = ops.minimum(log_scale, math.log(self.max_logit_scale))
        return ops.exp(log_scale)

    def current_teacher_temperature(self):
        """tau_t at this step: fixed, or on its linear warm-up (then fixed)."""
        if not self.teacher_temperature_warmup_steps:
            return self.teacher_temperature
        progress = ops.minimum(
            ops.cast(self.distillation_steps, "float32") / self.teacher_temperature_warmup_steps,
            1.0,
        )
        start, end = self.warmup_teacher_temperature, self.teacher_temperature
        return start + (end - start) * progress

    def prototype_gradient(self):
        """None, or a 0/1 factor on the gradient of the student's prototypes: 0 during
        the first `freeze_last_layer_steps` steps."""
        if not self.freeze_last_layer_steps:
            return None
        return ops.cast(
            ops.greater_equal(self.distillation_steps, float(self.freeze_last_layer_steps)),
            "float32",
        )

    def update_state_after_step(self, aux):
        """After the optimizer step: the EMA teacher, the step counter, the center and the
        metrics. Returns the logs.

        Reads the just-updated student; the center moves with the logits of the teacher
        that computed the loss.
        """
        if self.teacher is not None:
            m = self.teacher_momentum
            for teacher_weight, student_weight in zip(
                self.teacher.weights, self.student.weights, strict=True
            ):
                teacher_weight.assign(
                    m * teacher_weight.value
                    + (1.0 - m) * ops.cast(student_weight.value, teacher_weight.dtype)
                )
        if self.distillation_steps is not None:
            self.distillation_steps.assign(self.distillation_steps.value + 1.0)
        if self.center is not None:
            m = self.center_momentum
            self.center.assign(m * self.center.value + (1.0 - m) * aux["teacher_logits_mean"])
        return self.update_metrics(aux)

    # -------------------------------------------------------------- inference
    def _inference_encoder(self):
        tower = self.teacher if self.inference_tower == "teacher" else self.student
        return tower.encoder

    def encode_image(self, images):
        """L2-normalised image embeddings (N, J) of images (N, H, W, 3): floats in [0, 1]
        or uint8."""
        images = float_pixels(images, self.compute_dtype, "encode_image's images")
        return l2_normalize(on_batch(self._inference_encoder(), images))

    def encode_text(self, token_ids):
        """L2-normalised text embeddings (N, J) of integer token ids (N, T)."""
        if isinstance(token_ids, str) or (
            isinstance(token_ids, list | tuple) and token_ids and isinstance(token_ids[0], str)
        ):
            raise ValueError(
                "encode_text takes token ids, not captions: "
                "model.encode_text(model.preprocessor.tokenize(captions))."
            )
        check_rank(
            token_ids,
            2,
            "encode_text's token ids",
            "(N, T): one row of ids per caption",
            " For one caption, add a batch axis: token_ids[None].",
        )
        check_token_ids(token_ids, self.text_encoder.vocabulary_size, "encode_text's token ids")
        token_ids = ops.convert_to_tensor(token_ids, dtype="int32")
        return l2_normalize(on_batch(self.text_encoder, token_ids))

    def dense_image_features(self, images, source=None):
        """L2-normalised per-patch embeddings (N, h, w, J) in the shared space.

        `source`: see `VisionEncoder.dense_features` (None: the MAP head's value path
        where the tower has one, else the last block's patch tokens).
        """
        images = float_pixels(images, self.compute_dtype, "dense_image_features' images")
        encoder = self._inference_encoder()
        return l2_normalize(on_batch(lambda x: encoder.dense_features(x, source=source), images))

    def image_feature_extractor(self, normalize=True, dense_source=None):
        """The inference image tower alone, as an `ImageFeatureExtractor` (a Keras model
        returning {"pooled", "dense"} features) with a copy of its weights."""
        from keras_silc.models.image_features import ImageFeatureExtractor

        return ImageFeatureExtractor.from_encoder(
            self._inference_encoder(), self.vision_config, normalize, dense_source
        )

    def call(self, inputs):
        """`{"image": ..., "text": ...}` (either or both) -> normalised embeddings."""
        check_model_inputs(inputs)
        outputs = {}
        if "image" in inputs:
            # Values are checked on the host (predict); here only uint8 is scaled.
            images = float_pixels(inputs["image"], self.compute_dtype, check_values=False)
            outputs["image_embeddings"] = l2_normalize(self._inference_encoder()(images))
        if "text" in inputs:
            outputs["text_embeddings"] = l2_normalize(self.text_encoder(inputs["text"]))
        return outputs

    # ---------------------------------------------------------------- compile
    def compile(self, optimizer=None, **kwargs):
        """Compiles with the paper's recipe unless an optimizer is given.

        Keyword arguments named in `recipe` (learning_rate, warmup_steps,
        cooldown_steps, total_steps, timescale, weight_decay, beta_1, beta_2,
        global_clipnorm) override the model's recipe; the rest go to
        `keras.Model.compile`. Only weight matrices ("kernel" variables) get weight
        decay: not biases, norms, embeddings, the MAP probe or the temperature.
        """
        optimizer = compile_optimizer(self.recipe, optimizer, kwargs)
        super().compile(optimizer=optimizer, **kwargs)
        prepare_optimizer(self.optimizer, self.trainable_variables)

    # ------------------------------------------------------------------ saving
    def save(self, filepath, overwrite=True, zipped=None, **kwargs):
        """`keras.Model.save` to a `.keras` file (teacher, center, optimizer and
        preprocessor included). Keras's legacy `.h5` format cannot hold them: refused."""
        if str(filepath).lower().endswith((".h5", ".hdf5")):
            raise ValueError(
                f"Cannot save a SilcModel to {str(filepath)!r}: the legacy HDF5 format holds no "
                "custom state (teacher, center, preprocessor). Save to a '.keras' file, or "
                "use save_weights('....weights.h5') for the weights alone."
            )
        return super().save(filepath, overwrite=overwrite, zipped=zipped, **kwargs)

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in SCALAR_ARGUMENTS})
        config.update(
            vision=self.vision_config,
            text=self.text_config,
            head=self.head_config,
            preprocessor=keras.saving.serialize_keras_object(self.preprocessor),  # None stays
        )
        return config
