"""Backward-pass memory of two memory options, each against the plain computation.

- `remat`: the image tower with and without `remat=True`.
- `contrastive`: `clip_loss` against `chunked_clip_loss` (`contrastive_chunk_size`) as the
  batch grows: quadratic against linear.

PyTorch: bytes of the tensors autograd saves for the backward pass (counted with
`torch.autograd.graph.saved_tensors_hooks`). JAX: the compiled gradient's temporary buffer
size reported by XLA (`memory_analysis().temp_size_in_bytes`). Other backends: not measured.

    KERAS_BACKEND=torch python benchmarks/memory.py remat --depth 12 --batch-size 16
    KERAS_BACKEND=jax python benchmarks/memory.py contrastive --batch-sizes 1024,4096,16384
"""

import argparse

import keras
import numpy as np

from keras_silc import VisionEncoder


def build(args, remat):
    keras.utils.set_random_seed(0)
    encoder = VisionEncoder(
        image_size=args.image_size,
        patch_size=args.patch_size,
        width=args.width,
        depth=args.depth,
        num_heads=args.width // 64 or 1,
        remat=remat,
    )
    encoder.build()
    return encoder


def torch_saved_bytes(fn, *inputs):
    import torch

    seen, total = set(), [0]

    def pack(tensor):
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total[0] += tensor.numel() * tensor.element_size()
        return tensor

    inputs = [torch.tensor(x, requires_grad=True) for x in inputs]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = fn(*inputs)
    loss.backward()
    return total[0]


def jax_temp_bytes(fn, *inputs):
    import jax

    compiled = jax.jit(jax.grad(fn, argnums=tuple(range(len(inputs))))).lower(*inputs).compile()
    return compiled.memory_analysis().temp_size_in_bytes


MEASURES = {"torch": torch_saved_bytes, "jax": jax_temp_bytes}
WHAT = {"torch": "saved for backward", "jax": "XLA temp buffers"}


def encoder_loss(encoder):
    """sum(encoder(images)^2) as a function of the images and the trainable weights."""
    if keras.backend.backend() == "torch":
        return lambda images: keras.ops.sum(encoder(images) ** 2)
    trainable = [v.value for v in encoder.trainable_variables]
    other = [v.value for v in encoder.non_trainable_variables]

    def loss(trainable, images):
        outputs, _ = encoder.stateless_call(trainable, other, images)
        return keras.ops.sum(outputs**2)

    return lambda images: (loss, trainable, images)


def measure_remat(args, measure):
    shape = (args.batch_size, args.image_size, args.image_size, 3)
    images = np.random.default_rng(0).random(shape, dtype=np.float32)
    sizes = []
    for remat in (False, True):
        encoder = build(args, remat)
        if keras.backend.backend() == "torch":
            sizes.append(measure(encoder_loss(encoder), images))
        else:
            loss, trainable, _ = encoder_loss(encoder)(images)
            sizes.append(measure(loss, trainable, images))
    without, with_remat = sizes
    what = WHAT[keras.backend.backend()]
    print(f"ViT width {args.width} x {args.depth} blocks, images {shape}")
    print(f"{what}: {without / 2**20:.1f} MiB without remat, {with_remat / 2**20:.1f} MiB with")
    print(f"ratio with / without: {with_remat / without:.2f}x")


def measure_contrastive(args, measure):
    from keras_silc import losses

    print(f"| batch | clip_loss MiB | chunked ({args.chunk_size} rows) MiB | ratio |")
    print("|---|---|---|---|")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        rng = np.random.default_rng(0)
        images, texts = (rng.standard_normal((batch, 256)).astype(np.float32) for _ in range(2))
        scale = np.float32(10.0)
        dense = measure(lambda i, t, s: losses.clip_loss(i, t, s), images, texts, scale)
        chunked = measure(
            lambda i, t, s: losses.chunked_clip_loss(i, t, s, args.chunk_size),
            images,
            texts,
            scale,
        )
        print(f"| {batch} | {dense / 2**20:.1f} | {chunked / 2**20:.1f} | {chunked / dense:.3f}x |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["remat", "contrastive"])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16, help="remat")
    parser.add_argument("--batch-sizes", default="1024,4096,16384", help="contrastive")
    parser.add_argument("--chunk-size", type=int, default=512, help="contrastive")
    args = parser.parse_args()
    backend = keras.backend.backend()
    if backend not in MEASURES:
        raise SystemExit(f"Not measured on {backend}: run with KERAS_BACKEND=torch or jax.")
    print(f"backend {backend}: {WHAT[backend]}")
    if args.what == "remat":
        measure_remat(args, MEASURES[backend])
    else:
        measure_contrastive(args, MEASURES[backend])


if __name__ == "__main__":
    main()
