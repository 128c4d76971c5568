"""Activation memory of the image tower's backward pass with and without `remat=True`.

PyTorch: bytes of the tensors autograd saves for the backward pass (counted with
`torch.autograd.graph.saved_tensors_hooks`), which is what rematerialisation trades for
recomputation. JAX: the compiled gradient's temporary buffer size reported by XLA
(`memory_analysis().temp_size_in_bytes`). Other backends: not measured.

    KERAS_BACKEND=torch python benchmarks/remat_memory.py --depth 12 --batch-size 16
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


def torch_saved_bytes(encoder, images):
    import torch

    seen, total = set(), [0]

    def pack(tensor):
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = (encoder(torch.from_numpy(images)) ** 2).sum()
    loss.backward()
    return total[0]


def jax_temp_bytes(encoder, images):
    import jax

    trainable = [v.value for v in encoder.trainable_variables]
    other = [v.value for v in encoder.non_trainable_variables]

    def loss(trainable, images):
        outputs, _ = encoder.stateless_call(trainable, other, images)
        return keras.ops.sum(outputs**2)

    compiled = jax.jit(jax.grad(loss)).lower(trainable, images).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    backend = keras.backend.backend()
    measure = {"torch": torch_saved_bytes, "jax": jax_temp_bytes}.get(backend)
    if measure is None:
        raise SystemExit(f"Not measured on {backend}: run with KERAS_BACKEND=torch or jax.")
    shape = (args.batch_size, args.image_size, args.image_size, 3)
    images = np.random.default_rng(0).random(shape, dtype=np.float32)
    without, with_remat = (measure(build(args, remat), images) for remat in (False, True))
    what = "saved for backward" if backend == "torch" else "XLA temp buffers"
    print(f"backend {backend}, ViT width {args.width} x {args.depth} blocks, batch {shape}")
    print(f"{what}: {without / 2**20:.1f} MiB without remat, {with_remat / 2**20:.1f} MiB with")
    print(f"ratio with / without: {with_remat / without:.2f}x")


if __name__ == "__main__":
    main()
