"""The SILC model, its towers and presets."""

from keras_silc.models.legacy import upgrade_model_file

__all__ = ["upgrade_model_file"]
