"""Fine-tuning a pretrained model: lock a tower (LiT), unlock its last blocks, layer-wise
learning-rate decay. `SilcModel` takes these as constructor arguments and records them in
its config; everything they do is here.

- A locked tower is frozen with Keras's own switch (`variable.trainable = False`): it leaves
  `model.trainable_variables`, so no backend computes its gradients or updates it.
  `unlocked_<tower>_blocks=N` keeps the last N transformer blocks and everything above them
  (final LayerNorm, pooling head, projection) trainable: open_clip's
  `lock_image_tower(unlocked_groups=N + 1)` / `lock_text_tower(unlocked_layers=N + 1)`
  (open_clip/transformer.py, `VisionTransformer.lock`).
- Layer-wise learning-rate decay as in BEiT (`beit/optim_factory.py`, `get_num_layer_for_vit`,
  `LayerDecayValueAssigner`) and MAE (`util/lr_decay.py`, `param_groups_lrd`): in a tower of
  L blocks, block i (0-based) learns at `lr * layer_decay ** (L - i)`, the embeddings
  (patch / token, position, class token, CLIP's pre-norm) at `layer_decay ** (L + 1)`, and
  the final norm, pooling head and projection, the distillation head and the temperature at
  `lr`. Keras optimizers have one learning rate, and scaling gradients would not scale
  Adam's step, so the trainers scale each variable's *step*: `v <- v_old + s (v_new -
  v_old)`. For every optimizer whose step is proportional to its learning rate (SGD with or
  without momentum, Adam, AdamW with its decoupled weight decay, Lion, RMSprop) that is
  exactly the step with learning rate `s * lr`; it costs one copy of the scaled weights
  on TensorFlow and PyTorch.

SILC with a locked image tower: the self-distillation loss trains the student's image tower;
with the whole tower locked it could only move the new distillation head over frozen
features, so `lock_image=True` with `self_distillation=True` needs `unlocked_image_blocks > 0`
(fine-tune the top of the tower with SILC); for LiT (image tower locked, the text tower
learns to read it) set `self_distillation=False`.
"""

import numbers

TOWERS = ("image", "text")
ARGUMENTS = (
    "lock_image",
    "lock_text",
    "unlocked_image_blocks",
    "unlocked_text_blocks",
    "layer_decay",
)


def check_fine_tuning_arguments(arguments):
    """Raises ValueError naming the argument where the fine-tuning controls are malformed
    or disagree with the objective (block counts are checked against the towers later)."""
    a = arguments
    for tower in TOWERS:
        lock, unlocked = f"lock_{tower}", f"unlocked_{tower}_blocks"
        if not isinstance(a[lock], bool):
            raise ValueError(f"{lock} must be True or False, got {a[lock]!r}.")
        count = a[unlocked]
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
            raise ValueError(f"{unlocked} must be a whole number >= 0, got {count!r}.")
        if count and not a[lock]:
            raise ValueError(
                f"{unlocked}={count} only applies to a locked tower: set {lock}=True (without "
                "a lock every block trains)."
            )
    decay = a["layer_decay"]
    if decay is not None and (
        isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0 < decay <= 1
    ):
        raise ValueError(f"layer_decay must be None or a float in (0, 1], got {decay!r}.")
    if a["lock_image"] and a["self_distillation"] and not a["unlocked_image_blocks"]:
        raise ValueError(
            "lock_image=True freezes the whole image tower, so SILC's self-distillation could "
            "only train its new head over frozen features. For LiT (a locked image tower, the "
            "text tower learns) set self_distillation=False (and ema_teacher=False); to "
            "fine-tune the top of the image tower with SILC set unlocked_image_blocks > 0."
        )


def layer_ids(encoder):
    """{id(variable): layer id} of a `VisionEncoder` or `TextEncoder`, as BEiT numbers
    them: 0 the embeddings, i + 1 block i, L + 1 what follows the blocks."""
    depth = len(encoder.blocks)
    ids = {}
    for i, block in enumerate(encoder.blocks):
        ids.update({id(v): i + 1 for v in block.weights})
    for layer in (encoder.final_norm, encoder.map_head, encoder.projection):
        if layer is not None:
            ids.update({id(v): depth + 1 for v in layer.weights})
    # The rest (patch or token embedding, position tables, class token, pre-norm).
    ids.update({id(v): 0 for v in encoder.weights if id(v) not in ids})
    return ids


class FineTuning:
    """`SilcModel`'s fine-tuning controls (see the module docstring)."""

    def tower_encoder(self, tower):
        """The encoder a tower name refers to: "image" (the student's) or "text"."""
        if tower == "image":
            return self.student.encoder
        if tower == "text":
            return self.text_encoder
        raise ValueError(f"SilcModel has no {tower!r} tower; its towers are {TOWERS}.")

    def configure_fine_tuning(
        self, lock_image, lock_text, unlocked_image_blocks, unlocked_text_blocks, layer_decay
    ):
        """Records the controls (checked by `check_fine_tuning_arguments`) and freezes the
        locked towers but for their last unlocked blocks."""
        self.lock_image, self.lock_text = lock_image, lock_text
        self.unlocked_image_blocks = int(unlocked_image_blocks)
        self.unlocked_text_blocks = int(unlocked_text_blocks)
        self.layer_decay = None if layer_decay is None else float(layer_decay)
        for tower in TOWERS:
            if getattr(self, f"lock_{tower}"):
                self.lock_tower(tower, getattr(self, f"unlocked_{tower}_blocks"))

    def lock_tower(self, tower, unlocked_blocks=0):
        """Freezes a tower but for its last `unlocked_blocks` blocks and what follows them."""
        encoder = self.tower_encoder(tower)
        depth = len(encoder.blocks)
        if not 0 <= unlocked_blocks <= depth:
            raise ValueError(
                f"unlocked_{tower}_blocks={unlocked_blocks}, but the {tower} tower has {depth} "
                f"blocks; use a number from 0 to {depth}."
            )
        first_unlocked = depth + 1 - unlocked_blocks if unlocked_blocks else depth + 2
        ids = layer_ids(encoder)
        for variable in encoder.weights:
            variable.trainable = ids[id(variable)] >= first_unlocked

    def learning_rate_scales(self):
        """The factor on each of `trainable_variables`' steps, or None without layer decay."""
        if self.layer_decay is None:
            return None
        scales = {}
        for tower in TOWERS:
            encoder = self.tower_encoder(tower)
            depth = len(encoder.blocks)
            for key, layer_id in layer_ids(encoder).items():
                scales[key] = self.layer_decay ** (depth + 1 - layer_id)
        return [scales.get(id(v), 1.0) for v in self.trainable_variables]
