from keras_silc.layers.distillation_head import DistillationHead
from keras_silc.layers.distillation_head import HeadBatchNormalization
from keras_silc.layers.distillation_head import WeightNormalizedDense
from keras_silc.layers.distillation_head import l2_normalize
from keras_silc.layers.photometric import apply_photometric
from keras_silc.layers.position_embedding import PositionEmbedding2D
from keras_silc.layers.transformer import MAPHead
from keras_silc.layers.transformer import MlpBlock
from keras_silc.layers.transformer import MultiHeadAttention
from keras_silc.layers.transformer import TransformerBlock

__all__ = [
    "DistillationHead",
    "HeadBatchNormalization",
    "MAPHead",
    "MlpBlock",
    "MultiHeadAttention",
    "PositionEmbedding2D",
    "TransformerBlock",
    "WeightNormalizedDense",
    "apply_photometric",
    "l2_normalize",
]
