"""The README's quick start as a script: build, fit, save, reload, embed.

KERAS_BACKEND=torch python examples/fit_example_batches.py
"""

import keras
import numpy as np

import keras_silc

model = keras_silc.SilcModel.from_preset("silc_tiny")  # or "silc_b16" for the paper's model
model.compile()  # AdamW + rsqrt schedule + clipping, as in the paper
batch = model.preprocessor.example_batch(
    batch_size=16, seed=0
)  # the training batch format, random data
history = model.fit(batch, batch_size=16, epochs=20, verbose=0)
print({name: round(values[-1], 4) for name, values in history.history.items()})

model.save("silc_tiny.keras")  # teacher, center and optimizer state included
reloaded = keras.models.load_model("silc_tiny.keras")  # after `import keras_silc`

images = reloaded.encode_image(batch["image"])  # (16, J), L2-normalised
texts = reloaded.encode_text(batch["text"])  # (16, J)
dense = reloaded.dense_image_features(batch["image"])  # (16, h, w, J)
similarity = keras.ops.convert_to_numpy(images) @ keras.ops.convert_to_numpy(texts).T
print("in-batch image->text recall@1:", np.mean(similarity.argmax(1) == np.arange(16)))
print("dense features:", tuple(dense.shape))
