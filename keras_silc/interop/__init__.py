"""Start from pretrained SigLIP or CLIP weights (keras-hub or Hugging Face).

`SilcModel.from_keras_hub(preset_or_backbone)` and `SilcModel.from_huggingface(directory)`
are the entry points; the functions here build the configs and copy the weights.
"""

from keras_silc.interop.huggingface import load_huggingface_weights
from keras_silc.interop.huggingface import model_from_huggingface
from keras_silc.interop.huggingface import silc_config_from_huggingface
from keras_silc.interop.huggingface import tokenizer_from_huggingface
from keras_silc.interop.keras_hub import load_keras_hub_weights
from keras_silc.interop.keras_hub import model_from_keras_hub
from keras_silc.interop.keras_hub import silc_config_from_keras_hub
from keras_silc.interop.keras_hub import silc_tokenizer_from_keras_hub

__all__ = [
    "load_huggingface_weights",
    "load_keras_hub_weights",
    "model_from_huggingface",
    "model_from_keras_hub",
    "silc_config_from_huggingface",
    "silc_config_from_keras_hub",
    "silc_tokenizer_from_keras_hub",
    "tokenizer_from_huggingface",
]
