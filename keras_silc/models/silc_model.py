"""`SilcModel`: two towers, an EMA teacher, and SILC's objective in one place.

Read `compute_losses` top to bottom for the method (paper Sec. 3): the full image and
the global crops are aligned with the text by the contrastive loss, the teacher scores
the global crops, the student scores the local crops, and the student is pulled toward
the centered, sharpened teacher. `update_state_after_step` moves the teacher and the
center. The backend plumbing (gradients, optimizer, stateless JAX) lives in
`keras_silc/trainers/`.
"""

import math
import numbers
import warnings

import keras
import numpy as np
from keras import ops

from keras_silc import losses
from keras_silc.layers.distillation_head import l2_normalize
from keras_silc.layers.photometric import apply_photometric
from keras_silc.models.image_tower import ImageTower
from keras_silc.models.presets import merge_config
from keras_silc.models.presets import preset_config
from keras_silc.models.text_encoder import TextEncoder
from keras_silc.optimizers import paper_optimizer
from keras_silc.trainers import SilcTrainer

CONTRASTIVE_LOSSES = ("clip", "siglip")

# The rows of the paper's Table 6 as constructor switches.
TABLE6_ROWS = {
    "clip": {"multi_view_contrastive": False, "ema_teacher": False, "self_distillation": False},
    "clip+views": {
        "multi_view_contrastive": True,
        "ema_teacher": False,
        "self_distillation": False,
    },
    "clip+views+ema": {
        "multi_view_contrastive": True,
        "ema_teacher": True,
        "self_distillation": False,
        "inference_tower": "teacher",
    },
    "silc": {
        "multi_view_contrastive": True,
        "ema_teacher": True,
        "self_distillation": True,
        "inference_tower": "teacher",
    },
}

DEFAULT_RECIPE = {
    "learning_rate": 1e-3,
    "warmup_steps": 50_000,
    "cooldown_steps": 50_000,
    "total_steps": None,
    "timescale": 10_000,
    "weight_decay": 1e-4,
    "beta_1": 0.9,
    "beta_2": 0.95,
    "global_clipnorm": 1.0,
}

IMAGE_KEYS = {
    "image": "(B, S, S, 3)",
    "global_crops": "(B, G, S, S, 3)",
    "local_crops": "(B, L, s, s, 3)",
}

# Photometric parameters that a `MultiCropConfig(photometric="accelerator")` pipeline ships
# with the unaugmented crops; the model applies them at the start of its step.
PHOTOMETRIC_KEYS = {
    "global_crops": ("global_crop_color", "global_crop_blur"),
    "local_crops": ("local_crop_color", "local_crop_blur"),
}


@keras.saving.register_keras_serializable(package="keras_silc")
class SilcModel(SilcTrainer, keras.Model):
    """SILC: contrastive image-text pretraining with local-to-global self-distillation.

    Train with `model.compile()` (the paper's recipe) and `model.fit(dataset)`, where
    every batch is a dict:
        image:        (B, S, S, 3) float in [0, 1], the full image resized to S;
        global_crops: (B, G, S, S, 3) float in [0, 1];
        local_crops:  (B, L, s, s, 3) float in [0, 1];
        text:         (B, T) integer token ids, 0 for padding.
    S and s may be any multiple of the patch size; `global_crops` is only needed with
    `multi_view_contrastive` or `self_distillation`, `local_crops` only with
    `self_distillation`. A batch may also carry the crops' photometric parameters
    ("global_crop_color" (B, G, 6) with "global_crop_blur" (B, G, K), and the same for
    the local crops, from `MultiCropConfig(photometric="accelerator")`): the step then
    applies colour jitter, grayscale, blur and solarize to those crops on the accelerator
    first (`keras_silc.layers.apply_photometric`).

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
        warmup_teacher_temperature: float or None. With
            `teacher_temperature_warmup_steps`, tau_t starts here and moves linearly to
            `teacher_temperature` over those steps (DINO's teacher-temperature warm-up,
            e.g. 0.04 to 0.07; the paper keeps tau_t fixed, so it is off by default).
        teacher_temperature_warmup_steps: int. Length of that warm-up in training steps;
            0 (the default) keeps tau_t fixed. The step count is a non-trainable weight,
            so a resumed run continues the schedule.
        freeze_last_layer_steps: int. For this many first training steps the student's
            prototypes (the head's last layer) get no gradient, as DINO's
            `freeze_last_layer`; 0 (the default) trains them from the start. Counted
            by the same non-trainable step weight.
        teacher_momentum: float. lambda in `teacher = lambda teacher + (1 - lambda)
            student`, fixed for the whole run. Defaults to 0.966.
        center_momentum: float. m in `center = m center + (1 - m) mean(teacher)`.
            Defaults to 0.9.
        num_global_crops: int. G, used by `example_batch` and the data pipeline.
        num_local_crops: int. L.
        local_crop_size: int. s.
        logit_scale_init: float or None. Initial multiplier t (CLIP: 1/0.07, SigLIP:
            10 by default).
        logit_bias_init: float or None. Initial SigLIP bias (-10 by default).
        max_logit_scale: float or None. Clamp on t (CLIP: 100 by default; SigLIP:
            none).
        contrastive_chunk_size: int or None. Compute the contrastive loss this many
            rows at a time (`losses.chunked_clip_loss` / `chunked_siglip_loss`): same
            values and gradients, memory linear rather than quadratic in the batch.
            None (the default) computes the (B, B) matrix at once.
        gradient_accumulation_steps: int. M: compute each training step in M
            micro-batches of B / M examples (GradCache): the loss, the gradients, the
            EMA teacher and the center are those of the full batch of B (every example
            is a negative for every other), while the towers' activation memory is that
            of one micro-batch. Costs one extra forward pass of the contrastive views.
            Defaults to 1 (no splitting). Unlike the Keras optimizers'
            `gradient_accumulation_steps`, which would contrast each `fit` batch
            alone and move the teacher every batch, this keeps SILC's objective exact.
        inference_tower: "student" or "teacher". The image tower that
            `encode_image` and `dense_image_features` use.
        recipe: dict. Defaults for `compile()`: learning_rate, warmup_steps,
            cooldown_steps, total_steps, timescale, weight_decay, beta_1, beta_2,
            global_clipnorm.
        tokenizer: a `keras_silc.data.SilcTokenizer` (or None). Saved with the model, so
            a reloaded model tokenizes exactly as before; `model.tokenize(texts)` uses it.
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
        num_global_crops=2,
        num_local_crops=8,
        local_crop_size=96,
        logit_scale_init=None,
        logit_bias_init=None,
        max_logit_scale=None,
        contrastive_chunk_size=None,
        gradient_accumulation_steps=1,
        inference_tower="student",
        recipe=None,
        tokenizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if contrastive_loss not in CONTRASTIVE_LOSSES:
            raise ValueError(
                f"contrastive_loss must be one of {CONTRASTIVE_LOSSES}, got {contrastive_loss!r}."
            )
        if self_distillation and not ema_teacher:
            raise ValueError("self_distillation=True needs the EMA teacher: set ema_teacher=True.")
        if inference_tower not in ("student", "teacher"):
            raise ValueError(
                f"inference_tower must be 'student' or 'teacher', got {inference_tower!r}."
            )
        if inference_tower == "teacher" and not ema_teacher:
            raise ValueError("inference_tower='teacher' needs ema_teacher=True.")
        patch = vision.get("patch_size", 16)
        if local_crop_size % patch:
            raise ValueError(
                f"local_crop_size={local_crop_size} must be a multiple of the patch size {patch}."
            )
        if "output_dim" not in text:
            # The text tower must land in the image tower's space.
            text = {**text, "output_dim": vision.get("output_dim") or vision.get("width", 768)}

        # Config.
        self.vision_config = dict(vision)
        self.text_config = dict(text)
        self.head_config = dict(head)
        self.contrastive_loss = contrastive_loss
        self.multi_view_contrastive = multi_view_contrastive
        self.ema_teacher = ema_teacher
        self.self_distillation = self_distillation
        self.distillation_weight = distillation_weight
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        if teacher_temperature_warmup_steps < 0 or (
            teacher_temperature_warmup_steps and not warmup_teacher_temperature
        ):
            raise ValueError(
                "A teacher-temperature warm-up needs teacher_temperature_warmup_steps > 0 and "
                f"warmup_teacher_temperature > 0 (the starting tau_t); got "
                f"{teacher_temperature_warmup_steps!r} steps from {warmup_teacher_temperature!r}."
            )
        self.warmup_teacher_temperature = warmup_teacher_temperature
        self.teacher_temperature_warmup_steps = int(teacher_temperature_warmup_steps)
        if int(freeze_last_layer_steps) != freeze_last_layer_steps or freeze_last_layer_steps < 0:
            raise ValueError(
                "freeze_last_layer_steps must be a whole number of steps >= 0, got "
                f"{freeze_last_layer_steps!r}."
            )
        self.freeze_last_layer_steps = int(freeze_last_layer_steps)
        self.teacher_momentum = teacher_momentum
        self.center_momentum = center_momentum
        self.num_global_crops = num_global_crops
        self.num_local_crops = num_local_crops
        self.local_crop_size = local_crop_size
        siglip = contrastive_loss == "siglip"
        self.logit_scale_init = logit_scale_init or (10.0 if siglip else 1.0 / 0.07)
        self.logit_bias_init = logit_bias_init if logit_bias_init is not None else -10.0
        self.max_logit_scale = max_logit_scale or (None if siglip else 100.0)
        self.inference_tower = inference_tower
        if contrastive_chunk_size is not None and contrastive_chunk_size < 1:
            raise ValueError(
                f"contrastive_chunk_size must be a positive int or None, got "
                f"{contrastive_chunk_size!r}."
            )
        self.contrastive_chunk_size = contrastive_chunk_size
        if (
            isinstance(gradient_accumulation_steps, bool)
            or not isinstance(gradient_accumulation_steps, numbers.Integral)
            or gradient_accumulation_steps < 1
        ):
            raise ValueError(
                f"gradient_accumulation_steps must be a positive int, got "
                f"{gradient_accumulation_steps!r}."
            )
        self.gradient_accumulation_steps = int(gradient_accumulation_steps)
        self.recipe = merge_config(DEFAULT_RECIPE, recipe or {})
        if isinstance(tokenizer, dict):
            # A saved model's config: register SilcTokenizer (keras_silc.data is not
            # imported by `import keras_silc`) before deserializing it.
            import keras_silc.data.tokenizer  # noqa: F401

            tokenizer = keras.saving.deserialize_keras_object(tokenizer)
        self.tokenizer = tokenizer

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
        # Steps taken, for the teacher-temperature schedule and the frozen last layer (only
        # where there is one, so that other models keep their weights list).
        self.distillation_steps = (
            self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="distillation_steps"
            )
            if self_distillation
            and (self.teacher_temperature_warmup_steps or self.freeze_last_layer_steps)
            else None
        )
        if tokenizer is not None:
            self._check_tokenizer(tokenizer)
        metric_names = ["loss", "contrastive_loss", "temperature"]
        if siglip:
            metric_names.append("logit_bias")
        if self_distillation:
            metric_names += ["distillation_loss", "teacher_entropy", "student_teacher_kl"]
            if self.teacher_temperature_warmup_steps:
                metric_names.append("teacher_temperature")
        self.trackers = [keras.metrics.Mean(name=name) for name in metric_names]
        self.built = True

    def _check_tokenizer(self, tokenizer):
        if not getattr(tokenizer, "has_vocabulary", True):
            return  # a model being loaded: the vocabulary arrives with the assets
        text = self.text_encoder
        size = getattr(tokenizer, "vocabulary_size", None)
        if size is not None and size > text.vocabulary_size:
            raise ValueError(
                f"The tokenizer has {size} tokens but the text tower embeds "
                f"{text.vocabulary_size}; build the model with text={{'vocabulary_size': {size}}}."
            )
        length = getattr(tokenizer, "sequence_length", None)
        if length is not None and length > text.max_length:
            raise ValueError(
                f"The tokenizer pads to {length} tokens but the text tower's max_length is "
                f"{text.max_length}; set text={{'max_length': {length}}} or shorten the tokenizer."
            )
        # With "last" pooling (the presets') any end token works: pads come last and the
        # final position attends to the whole caption. "eos" pooling must find the end token.
        end = getattr(tokenizer, "end_token_id", None)
        if not getattr(tokenizer, "add_end_token", True):
            end = None  # no end token in the ids
        if text.pooling == "eos" and text.eos_token_id is not None and end != text.eos_token_id:
            raise ValueError(
                f"The text tower pools at eos_token_id={text.eos_token_id} but the tokenizer ends "
                f"captions with id {end}; set text={{'eos_token_id': {end}}}."
            )

    def tokenize(self, texts):
        """Token ids (N, T) of captions with the model's tokenizer."""
        if self.tokenizer is None:
            raise ValueError(
                "This model has no tokenizer: build it with tokenizer=SilcTokenizer(...) (e.g. "
                "keras_silc.data.SilcTokenizer.from_captions(captions, ...)) or set model.tokenizer."
            )
        return self.tokenizer(texts)

    # ----------------------------------------------------------------- presets
    @classmethod
    def from_preset(cls, name, **overrides):
        """Builds a model from a named preset; keyword overrides merge into it.

        Example: `SilcModel.from_preset("silc_b16", contrastive_loss="siglip",
        head={"num_prototypes": 16384})`.
        """
        tokenizer = overrides.pop("tokenizer", None)  # a layer: not merged or copied
        return cls(**preset_config(name, **overrides), tokenizer=tokenizer)

    @classmethod
    def from_keras_hub(cls, backbone, tokenizer=None, **overrides):
        """A SilcModel whose towers carry a keras-hub SigLIP or CLIP backbone's weights.

        The image tower, text tower and temperature (and SigLIP's bias) are copied
        exactly; the distillation head is new (the paper's K = 65,536 unless
        `head={...}` says otherwise) and the EMA teacher starts as a copy of the
        student. Overrides merge into the converted config as in `from_preset`, e.g.
        `head={"num_prototypes": 8192}, num_local_crops=6`. Fine-tune with a smaller
        learning rate than pretraining, e.g. `model.compile(learning_rate=1e-5, ...)`.

        Example:
            backbone = keras_hub.models.SigLIPBackbone.from_preset("siglip_base_patch16_224")
            model = SilcModel.from_keras_hub(backbone)
        """
        from keras_silc import interop

        model = cls(
            **interop.silc_config_from_keras_hub(backbone, **overrides), tokenizer=tokenizer
        )
        interop.load_keras_hub_weights(model, backbone)
        return model

    @classmethod
    def from_huggingface(cls, directory, tokenizer=None, **overrides):
        """A SilcModel from a local Hugging Face `SiglipModel` / `CLIPModel` folder.

        Reads `config.json` and the safetensors weights (no network, no
        `transformers`); otherwise as `from_keras_hub`.
        """
        from keras_silc import interop

        config = interop.silc_config_from_huggingface(directory, **overrides)
        model = cls(**config, tokenizer=tokenizer)
        interop.load_huggingface_weights(model, directory)
        return model

    @property
    def vision_encoder(self):
        """The student's vision encoder: the image tower of the contrastive model."""
        return self.student.encoder

    @property
    def metrics(self):
        return self.trackers

    # --------------------------------------------------------------- objective
    def logit_scale(self):
        log_scale = ops.cast(self.log_logit_scale, "float32")
        if self.max_logit_scale:
            log_scale = ops.minimum(log_scale, math.log(self.max_logit_scale))
        return ops.exp(log_scale)

    def _contrastive(self, image_embeddings, text_embeddings, logit_scale):
        chunk = self.contrastive_chunk_size
        if chunk and (image_embeddings.shape[0] is None or image_embeddings.shape[0] > chunk):
            if self.contrastive_loss == "clip":
                return losses.chunked_clip_loss(
                    image_embeddings, text_embeddings, logit_scale, chunk
                )
            return losses.chunked_siglip_loss(
                image_embeddings, text_embeddings, logit_scale, self.logit_bias, chunk
            )
        if self.contrastive_loss == "clip":
            return losses.clip_loss(image_embeddings, text_embeddings, logit_scale)
        return losses.siglip_loss(image_embeddings, text_embeddings, logit_scale, self.logit_bias)

    def compute_losses(self, batch, training=True):
        """SILC's objective on one batch. Returns (total_loss, aux dict).

        aux holds the terms to log and `teacher_logits_mean`, the (K,) batch mean
        of the teacher's logits that updates the center after the step. `training`
        (False in `test_step`) only matters to a head with batch normalisation.
        """
        image_embeddings, text_embeddings = self.contrastive_embeddings(batch)
        contrastive, aux = self.contrastive_terms(image_embeddings, text_embeddings)
        total = contrastive
        if self.self_distillation:
            distillation = self.distillation_terms(batch, training=training)
            total = total + self.distillation_weight * distillation["distillation_loss"]
            aux.update(distillation)
        aux["loss"] = total
        return total, aux

    def contrastive_embeddings(self, batch):
        """Normalised (B, V, J) image embeddings of the V contrastive views (the full
        image, then each global crop with `multi_view_contrastive`) and (B, J) text
        embeddings."""
        images = batch["image"]
        text_embeddings = l2_normalize(self.text_encoder(batch["text"]))
        views = images[:, None]
        if self.multi_view_contrastive:
            views = ops.concatenate([views, ops.cast(batch["global_crops"], images.dtype)], axis=1)
        num_views = views.shape[1]
        flat_views = ops.reshape(views, (-1,) + tuple(views.shape[2:]))
        image_embeddings = l2_normalize(self.student.encoder(flat_views))
        image_embeddings = ops.reshape(
            image_embeddings, (-1, num_views, image_embeddings.shape[-1])
        )
        return image_embeddings, text_embeddings

    def contrastive_terms(self, image_embeddings, text_embeddings):
        """Contrastive alignment of every view with the text, each view a B x B
        problem at the same batch size, averaged. Returns (loss, aux)."""
        logit_scale = self.logit_scale()
        num_views = image_embeddings.shape[1]
        contrastive = sum(
            self._contrastive(image_embeddings[:, v], text_embeddings, logit_scale)
            for v in range(num_views)
        ) / float(num_views)
        aux = {"contrastive_loss": contrastive, "temperature": 1.0 / logit_scale}
        if self.logit_bias is not None:
            aux["logit_bias"] = ops.cast(self.logit_bias, "float32")
        return contrastive, aux

    def distillation_terms(self, batch, training=True):
        """The teacher on the global crops (no gradient), the student on the local
        crops, and the distillation loss between them. Every term is a mean over
        examples, so it splits over micro-batches."""
        global_crops, local_crops = batch["global_crops"], batch["local_crops"]
        num_global, num_local = global_crops.shape[1], local_crops.shape[1]
        # Like DINO's teacher, ours is in training mode: a batch-normalised head uses
        # the statistics of the batch's global crops.
        teacher_logits = self.teacher(
            ops.reshape(global_crops, (-1,) + tuple(global_crops.shape[2:])), training=training
        )
        teacher_logits = ops.stop_gradient(
            ops.reshape(
                ops.cast(teacher_logits, "float32"), (-1, num_global, teacher_logits.shape[-1])
            )
        )
        student_logits = self.student(
            ops.reshape(local_crops, (-1,) + tuple(local_crops.shape[2:])),
            training=training,
            prototype_gradient=self.prototype_gradient(),
        )
        student_logits = ops.reshape(student_logits, (-1, num_local, student_logits.shape[-1]))
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

    def prototype_gradient(self):
        """None, or a 0/1 factor on the gradient of the student's prototypes: 0 during
        the first `freeze_last_layer_steps` steps."""
        if not self.freeze_last_layer_steps:
            return None
        return ops.cast(
            ops.greater_equal(self.distillation_steps, float(self.freeze_last_layer_steps)),
            "float32",
        )

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

    # ------------------------------------------------ gradient accumulation
    # With gradient_accumulation_steps = M the trainers compute the full-batch step
    # in micro-batches (GradCache, Gao et al. 2021): (1) embed every micro-batch
    # without gradients; (2) the contrastive loss of the whole batch and its gradient
    # with respect to the embeddings; (3) per micro-batch, backpropagate those
    # embedding gradients and the micro-batch's share of the distillation loss
    # through the towers, summing the weight gradients.
    def split_micro_batches(self, batch):
        """The batch's entries as (M, B / M, ...) arrays. Micro-batch j holds examples
        j, j + M, j + 2M, ...: strided, so that each device's shard of a data-parallel
        batch feeds every micro-batch equally."""
        steps = self.gradient_accumulation_steps
        micro = {}
        for key in self.required_keys():
            value = batch[key]
            size = value.shape[0]
            if size is not None and size % steps:
                raise ValueError(
                    f"gradient_accumulation_steps={steps} must divide the batch size, but "
                    f"batch['{key}'] has {size} examples. Use a batch size that is a multiple "
                    f"of {steps}, or another gradient_accumulation_steps."
                )
            value = ops.reshape(value, (-1, steps) + tuple(value.shape[1:]))
            micro[key] = ops.moveaxis(value, 1, 0)
        return micro

    def micro_batch_embeddings(self, micro_batches):
        """Step (1): (M * b, V, J) image and (M * b, J) text embeddings, micro-batch
        by micro-batch, in micro-batch order. Call without recording gradients."""

        def embed(micro):
            image_embeddings, text_embeddings = self.contrastive_embeddings(micro)
            return ops.stop_gradient(image_embeddings), ops.stop_gradient(text_embeddings)

        image_embeddings, text_embeddings = ops.map(embed, micro_batches)
        image_embeddings = ops.reshape(image_embeddings, (-1,) + tuple(image_embeddings.shape[2:]))
        text_embeddings = ops.reshape(text_embeddings, (-1,) + tuple(text_embeddings.shape[2:]))
        return image_embeddings, text_embeddings

    def micro_batch_objective(self, micro, image_gradients, text_gradients):
        """Step (3): a scalar whose gradient with respect to the weights is micro-batch
        j's share of the full-batch gradient: the embeddings dotted with the
        (constant) gradients of the full contrastive loss with respect to them, plus
        1 / M of the micro-batch's distillation loss. Returns (objective, aux)."""
        image_embeddings, text_embeddings = self.contrastive_embeddings(micro)
        objective = sum(
            ops.sum(ops.cast(value, "float32") * ops.cast(ops.stop_gradient(grad), "float32"))
            for value, grad in (
                (image_embeddings, image_gradients),
                (text_embeddings, text_gradients),
            )
        )
        aux = {}
        if self.self_distillation:
            aux = self.distillation_terms(micro)
            weight = self.distillation_weight / self.gradient_accumulation_steps
            objective = objective + weight * aux["distillation_loss"]
        return objective, aux

    def combine_micro_batch_aux(self, contrastive_aux, micro_aux):
        """The full-batch aux from the contrastive terms and the (M, ...) stacked
        micro-batch terms, which are means over equal micro-batches."""
        aux = dict(contrastive_aux)
        aux.update({key: ops.mean(value, axis=0) for key, value in micro_aux.items()})
        total = aux["contrastive_loss"]
        if self.self_distillation:
            total = total + self.distillation_weight * aux["distillation_loss"]
        aux["loss"] = total
        return aux

    def contrastive_variables(self):
        """The weights that only the contrastive loss of the whole batch touches."""
        return [self.log_logit_scale] + ([self.logit_bias] if self.logit_bias is not None else [])

    def update_state_after_step(self, aux):
        """After the optimizer step: EMA teacher, center, metrics. Returns logs.

        Reads the just-updated student; the center moves with the logits of the
        teacher that computed the loss.
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

    def update_metrics(self, aux):
        for tracker in self.trackers:
            tracker.update_state(aux[tracker.name])
        return {tracker.name: tracker.result() for tracker in self.trackers}

    # ------------------------------------------------------------- validation
    def required_keys(self):
        keys = ["image", "text"]
        if self.multi_view_contrastive or self.self_distillation:
            keys.append("global_crops")
        if self.self_distillation:
            keys.append("local_crops")
        return keys

    def _expected(self, key):
        s, p = self.vision_config.get("image_size", 256), self.vision_config.get("patch_size", 16)
        geometry = (
            f"S={s}, G={self.num_global_crops}, s={self.local_crop_size}, L={self.num_local_crops}, "
            f"T<={self.text_encoder.max_length}; S and s multiples of the patch size {p}"
        )
        shape = IMAGE_KEYS.get(key, "(B, T)")
        return f"expected {shape} ({geometry})"

    def prepare_batch(self, batch):
        """Validates a batch and applies any photometric parameters it carries to its
        crops (see `PHOTOMETRIC_KEYS`); the returned batch holds finished crops."""
        self.validate_batch(batch)
        carried = [key for key, names in PHOTOMETRIC_KEYS.items() if names[0] in batch]
        if not carried:
            return batch
        batch = dict(batch)
        for key in carried:
            color_key, blur_key = PHOTOMETRIC_KEYS[key]
            color, blur = batch.pop(color_key), batch.pop(blur_key)
            if key in self.required_keys():
                batch[key] = ops.cast(apply_photometric(batch[key], color, blur), batch[key].dtype)
        return batch

    def _validate_photometric(self, batch):
        for key, (color_key, blur_key) in PHOTOMETRIC_KEYS.items():
            present = [name for name in (color_key, blur_key) if name in batch]
            if not present:
                continue
            how = (
                f"'{color_key}' (B, N, 6) and '{blur_key}' (B, N, K), K odd, come together "
                f"with '{key}' (N crops), as MultiCropConfig(photometric='accelerator') makes them"
            )
            if len(present) == 1 or key not in batch:
                raise ValueError(f"The batch has {present} without the rest: {how}.")
            crops = tuple(batch[key].shape)
            color, blur = tuple(batch[color_key].shape), tuple(batch[blur_key].shape)
            if (
                len(color) != 3
                or color[-1] != 6
                or len(blur) != 3
                or blur[-1] is None
                or blur[-1] % 2 == 0
                or color[:2] != crops[:2]
                or blur[:2] != crops[:2]
            ):
                raise ValueError(
                    f"batch['{color_key}'] is {color} and batch['{blur_key}'] is {blur} for "
                    f"batch['{key}'] of {crops}; {how}."
                )
            radius = blur[-1] // 2
            if radius >= min(crops[2:4]):
                raise ValueError(
                    f"batch['{blur_key}'] has kernels of {blur[-1]} taps, too wide for "
                    f"{crops[2]}x{crops[3]} crops (reflect padding needs radius < side); "
                    "lower MultiCropConfig.blur_sigma."
                )

    def validate_batch(self, batch):
        """Checks keys, ranks, sizes and dtypes; raises ValueError naming the key.

        Runs on static shapes when the step is traced, so it costs nothing per step.
        """
        if not hasattr(batch, "keys"):
            raise ValueError(
                "SilcModel expects each batch to be a dict with keys "
                f"{self.required_keys()}; got {type(batch).__name__}. See the README's "
                "'Training batch format'."
            )
        missing = [key for key in self.required_keys() if key not in batch]
        if missing:
            raise ValueError(
                f"The batch is missing {missing}; it has {sorted(batch.keys())}. "
                + "; ".join(f"'{key}' {self._expected(key)}" for key in missing)
            )
        patch = self.vision_config.get("patch_size", 16)
        batch_sizes = set()
        for key in self.required_keys():
            value = batch[key]
            shape = tuple(value.shape)
            dtype = keras.backend.standardize_dtype(value.dtype)
            if key == "text":
                if len(shape) != 2:
                    raise ValueError(f"batch['text'] has shape {shape}; {self._expected(key)}.")
                if "int" not in dtype:
                    raise ValueError(
                        f"batch['text'] has dtype {dtype}; it must hold integer token ids "
                        f"{self._expected(key)}. Tokenize captions first."
                    )
                if shape[1] is not None and shape[1] > self.text_encoder.max_length:
                    raise ValueError(
                        f"batch['text'] has length {shape[1]} > max_length "
                        f"{self.text_encoder.max_length}; {self._expected(key)}."
                    )
            else:
                rank = 4 if key == "image" else 5
                if len(shape) != rank or shape[-1] != 3:
                    raise ValueError(f"batch['{key}'] has shape {shape}; {self._expected(key)}.")
                height, width = shape[-3], shape[-2]
                if height is None or width is None or height % patch or width % patch:
                    raise ValueError(
                        f"batch['{key}'] has shape {shape}: crops of {height}x{width} are not "
                        f"a multiple of the patch size {patch}; {self._expected(key)}."
                    )
                if "float" not in dtype:
                    raise ValueError(
                        f"batch['{key}'] has dtype {dtype}; images must be floats in [0, 1] "
                        f"(divide uint8 images by 255). {self._expected(key)}."
                    )
            if shape[0] is not None:
                batch_sizes.add(shape[0])
        if self.multi_view_contrastive:
            image_size = tuple(batch["image"].shape[1:3])
            crop_size = tuple(batch["global_crops"].shape[2:4])
            if image_size != crop_size:
                raise ValueError(
                    f"batch['global_crops'] are {crop_size} but batch['image'] is "
                    f"{image_size}; with multi_view_contrastive they share the size S. "
                    f"{self._expected('global_crops')}."
                )
        if len(batch_sizes) > 1:
            raise ValueError(
                f"The batch's entries disagree on the batch size: "
                f"{ {key: tuple(batch[key].shape) for key in self.required_keys()} }."
            )
        self._validate_photometric(batch)

    # -------------------------------------------------------------- inference
    def _inference_encoder(self):
        tower = self.teacher if self.inference_tower == "teacher" else self.student
        return tower.encoder

    def encode_image(self, images):
        """L2-normalised image embeddings (N, J) of float images in [0, 1]."""
        images = ops.convert_to_tensor(images, dtype=self.compute_dtype)
        return l2_normalize(self._inference_encoder()(images))

    def encode_text(self, token_ids):
        """L2-normalised text embeddings (N, J) of integer token ids (N, T)."""
        token_ids = ops.convert_to_tensor(token_ids, dtype="int32")
        return l2_normalize(self.text_encoder(token_ids))

    def dense_image_features(self, images, source=None):
        """L2-normalised per-patch embeddings (N, h, w, J) in the shared space.

        `source`: see `VisionEncoder.dense_features` (None: the MAP head's value path
        where the tower has one, else the last block's patch tokens).
        """
        images = ops.convert_to_tensor(images, dtype=self.compute_dtype)
        return l2_normalize(self._inference_encoder().dense_features(images, source=source))

    def image_feature_extractor(self, normalize=True, dense_source=None):
        """The inference image tower alone, as an `ImageFeatureExtractor` (a Keras model
        returning {"pooled", "dense"} features) with a copy of its weights."""
        from keras_silc.models.image_features import ImageFeatureExtractor

        extractor = ImageFeatureExtractor(
            self.vision_config,
            normalize=normalize,
            dense_source=dense_source,
            name="image_features",
            dtype=self.dtype_policy,
        )
        for target, source in zip(
            extractor.encoder.weights, self._inference_encoder().weights, strict=True
        ):
            target.assign(ops.copy(source.value))  # no buffer shared with the trained model
        return extractor

    def call(self, inputs):
        """`{"image": ..., "text": ...}` (either or both) -> normalised embeddings."""
        outputs = {}
        if "image" in inputs:
            outputs["image_embeddings"] = l2_normalize(self._inference_encoder()(inputs["image"]))
        if "text" in inputs:
            outputs["text_embeddings"] = l2_normalize(self.text_encoder(inputs["text"]))
        return outputs

    # ----------------------------------------------------------- example data
    def example_batch(self, batch_size=8, seed=0):
        """A random numpy batch in the training format, for this model's geometry."""
        rng = np.random.default_rng(seed)
        s_global = self.vision_config.get("image_size", 256)
        s_local = self.local_crop_size
        vocabulary, length = self.text_encoder.vocabulary_size, self.text_encoder.max_length
        text = rng.integers(1, vocabulary, size=(batch_size, length), dtype=np.int32)
        lengths = rng.integers(1, length + 1, size=(batch_size, 1))
        text = np.where(np.arange(length)[None, :] < lengths, text, 0).astype(np.int32)

        def uniform(*shape):
            return rng.random(shape, dtype=np.float32)

        return {
            "image": uniform(batch_size, s_global, s_global, 3),
            "global_crops": uniform(batch_size, self.num_global_crops, s_global, s_global, 3),
            "local_crops": uniform(batch_size, self.num_local_crops, s_local, s_local, 3),
            "text": text,
        }

    # ---------------------------------------------------------------- compile
    def compile(self, optimizer=None, **kwargs):
        """Compiles with the paper's recipe unless an optimizer is given.

        Keyword arguments named in `recipe` (learning_rate, warmup_steps,
        cooldown_steps, total_steps, timescale, weight_decay, beta_1, beta_2,
        global_clipnorm) override the model's recipe; the rest go to
        `keras.Model.compile`. Only weight matrices ("kernel" variables) get weight
        decay: not biases, norms, embeddings, the MAP probe or the temperature.
        """
        recipe_overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in DEFAULT_RECIPE}
        if optimizer is None:
            recipe = merge_config(self.recipe, recipe_overrides)
            if recipe["cooldown_steps"] and not recipe["total_steps"]:
                warnings.warn(
                    "No total_steps in the recipe, so the rsqrt schedule runs without its "
                    "cool-down; pass compile(total_steps=...) for the paper's cool-down.",
                    stacklevel=2,
                )
                recipe["cooldown_steps"] = 0
            optimizer = paper_optimizer(**recipe)
        elif recipe_overrides:
            raise ValueError(
                f"{sorted(recipe_overrides)} configure the default optimizer; they cannot be "
                "combined with an explicit optimizer."
            )
        if kwargs.get("loss") is not None:
            raise ValueError("SilcModel computes its own losses; do not pass `loss` to compile().")
        super().compile(optimizer=optimizer, **kwargs)
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        if getattr(inner, "gradient_accumulation_steps", None):
            warnings.warn(
                "The optimizer's gradient_accumulation_steps contrasts each fit batch only "
                "with itself and moves the EMA teacher and the center every batch. For the "
                "step of one large batch in micro-batches, build the model with "
                "SilcModel(..., gradient_accumulation_steps=M) instead.",
                stacklevel=2,
            )
        if not getattr(inner, "built", False) and getattr(inner, "weight_decay", None):
            inner.exclude_from_weight_decay(
                var_list=[v for v in self.trainable_variables if v.name != "kernel"]
            )

    def compile_from_config(self, config):
        """Restores the compiled state on `keras.models.load_model`."""
        optimizer = config.get("optimizer")
        if isinstance(optimizer, dict) and optimizer.get("module", "").startswith(
            "keras.src.backend."
        ):
            # Keras records PyTorch's optimizers under their backend module; use the
            # public class so that a file saved under torch trains under jax or tf.
            config = {**config, "optimizer": {**optimizer, "module": "keras.optimizers"}}
            config["optimizer"].pop("registered_name", None)
        config = keras.saving.deserialize_keras_object(config)
        # jit_compile is the saving backend's choice (True under JAX would turn on
        # torch.compile under PyTorch): let the loading backend pick its default.
        config.pop("jit_compile", None)
        self.compile(**config)
        self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vision": self.vision_config,
                "text": self.text_config,
                "head": self.head_config,
                "contrastive_loss": self.contrastive_loss,
                "multi_view_contrastive": self.multi_view_contrastive,
                "ema_teacher": self.ema_teacher,
                "self_distillation": self.self_distillation,
                "distillation_weight": self.distillation_weight,
                "student_temperature": self.student_temperature,
                "teacher_temperature": self.teacher_temperature,
                "warmup_teacher_temperature": self.warmup_teacher_temperature,
                "teacher_temperature_warmup_steps": self.teacher_temperature_warmup_steps,
                "freeze_last_layer_steps": self.freeze_last_layer_steps,
                "teacher_momentum": self.teacher_momentum,
                "center_momentum": self.center_momentum,
                "num_global_crops": self.num_global_crops,
                "num_local_crops": self.num_local_crops,
                "local_crop_size": self.local_crop_size,
                "logit_scale_init": self.logit_scale_init,
                "logit_bias_init": self.logit_bias_init,
                "max_logit_scale": self.max_logit_scale,
                "contrastive_chunk_size": self.contrastive_chunk_size,
                "gradient_accumulation_steps": self.gradient_accumulation_steps,
                "inference_tower": self.inference_tower,
                "recipe": self.recipe,
                "tokenizer": (
                    keras.saving.serialize_keras_object(self.tokenizer)
                    if self.tokenizer is not None
                    else None
                ),
            }
        )
        return config
