"""Backward-pass memory of three memory options, each against the plain computation.

- `remat`: the image tower with and without `remat=True`.
- `contrastive`: `clip_loss` against `chunked_clip_loss` (`contrastive_chunk_size`) as the
  batch grows: quadratic against linear.
- `accumulation`: a whole SILC training step (`SilcModel.train_step`) at one batch size,
  in one piece and with `gradient_accumulation_steps` M = 2, 4, ...

PyTorch: bytes of the tensors autograd saves for the backward pass (counted with
`torch.autograd.graph.saved_tensors_hooks`). JAX: the compiled gradient's temporary buffer
size reported by XLA (`memory_analysis().temp_size_in_bytes`). Other backends: not measured.

    KERAS_BACKEND=torch python benchmarks/memory.py remat --depth 12 --batch-size 16
    KERAS_BACKEND=jax python benchmarks/memory.py contrastive --batch-sizes 1024,4096,16384
    KERAS_BACKEND=jax python benchmarks/memory.py accumulation --batch-size 64 --steps 1,4,16

For `accumulation` under PyTorch the figure is the peak of the bytes held for backward at
any moment of the step (each micro-batch's are freed by its backward pass).
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


def silc_step_bytes(args, steps):
    """Memory of one SilcModel training step with gradient_accumulation_steps=steps."""
    from keras_silc import SilcModel

    keras.utils.set_random_seed(0)
    model = SilcModel.from_preset(args.preset, gradient_accumulation_steps=steps)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
    batch = model.preprocessor.example_batch(args.batch_size)
    if keras.backend.backend() == "jax":
        import jax

        model.optimizer.build(model.trainable_variables)
        state = tuple(
            [v.value for v in variables]
            for variables in (
                model.trainable_variables,
                model.non_trainable_variables,
                model.optimizer.variables,
                model.metrics_variables,
            )
        )
        compiled = jax.jit(model.train_step).lower(state, batch).compile()
        return compiled.memory_analysis().temp_size_in_bytes
    import weakref

    import torch

    held, peak = [0], [0]

    class Saved:
        def __init__(self, tensor):
            self.tensor = tensor

    def release(size):
        held[0] -= size

    def pack(tensor):
        box, size = Saved(tensor), tensor.numel() * tensor.element_size()
        held[0] += size
        peak[0] = max(peak[0], held[0])
        weakref.finalize(box, release, size)
        return box

    batch = {k: torch.as_tensor(v) for k, v in batch.items()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.tensor):
        model.train_step(batch)
    return peak[0]


def measure_accumulation(args, _):
    rows = [(m, silc_step_bytes(args, m)) for m in (int(m) for m in args.steps.split(","))]
    baseline = dict(rows).get(1) or rows[0][1]
    print(f"{args.preset}, one training step at batch {args.batch_size}")
    print("| gradient_accumulation_steps | micro-batch | MiB | ratio to M=1 |")
    print("|---|---|---|---|")
    for steps, size in rows:
        micro = args.batch_size // steps
        print(f"| {steps} | {micro} | {size / 2**20:.1f} | {size / baseline:.2f}x |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["remat", "contrastive", "accumulation"])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16, help="remat, accumulation")
    parser.add_argument("--batch-sizes", default="1024,4096,16384", help="contrastive")
    parser.add_argument("--chunk-size", type=int, default=512, help="contrastive")
    parser.add_argument("--preset", default="silc_tiny", help="accumulation")
    parser.add_argument("--steps", default="1,2,4,8", help="accumulation: values of M")
    args = parser.parse_args()
    backend = keras.backend.backend()
    if backend not in MEASURES:
        raise SystemExit(f"Not measured on {backend}: run with KERAS_BACKEND=torch or jax.")
    print(f"backend {backend}: {WHAT[backend]}")
    measure = {
        "remat": measure_remat,
        "contrastive": measure_contrastive,
        "accumulation": measure_accumulation,
    }[args.what]
    measure(args, MEASURES[backend])


if __name__ == "__main__":
    main()
