"""The image tower plus distillation head: SILC's student, and its EMA teacher."""

import keras

from keras_silc.layers.distillation_head import DistillationHead
from keras_silc.models.vision_encoder import VisionEncoder


@keras.saving.register_keras_serializable(package="keras_silc")
class ImageTower(keras.layers.Layer):
    """A `VisionEncoder` followed by a `DistillationHead`.

    Calling it on images (N, H, W, 3) returns head logits (N, K). The student and the
    teacher are two instances built from the same config, so their `weights` lists
    pair up one to one.

    Args:
        vision: dict. `VisionEncoder` arguments.
        head: dict. `DistillationHead` arguments.
    """

    def __init__(self, vision, head, **kwargs):
        super().__init__(**kwargs)
        self.vision = dict(vision)
        self.head_config = dict(head)
        self.encoder = VisionEncoder(**self.vision, name="encoder", dtype=self.dtype_policy)
        self.head = DistillationHead(**self.head_config, name="head", dtype=self.dtype_policy)
        self.build()

    def build(self, images_shape=None):
        self.encoder.build()
        self.head.build((None, self.encoder.embedding_dim))
        self.built = True

    def call(self, images, training=None, prototype_gradient=None):
        # `training` only matters to the head's optional batch normalisation.
        return self.head(
            self.encoder(images), training=training, prototype_gradient=prototype_gradient
        )

    def compute_output_shape(self, images_shape):
        return (images_shape[0], self.head.num_prototypes)

    def get_config(self):
        config = super().get_config()
        config.update({"vision": self.vision, "head": self.head_config})
        return config
