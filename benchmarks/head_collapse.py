"""When does the distillation head collapse? One SILC run with the Table 6 setup, and the
head's state every N steps.

Trains the `silc_c` (or `silc_s`) row of `reproduce_table6.py` (the demo's 64 px model, recipe
and augmentation, Fashion-MNIST train scenes, class-only captions) and prints
`evaluation.distillation_diagnostics` of the teacher and the student on test scenes every
`--every` steps: the teacher's entropy (of log K), the mean cosine between the images'
bottleneck vectors (1: the head maps every image to the same point) and the number of
distinct argmax prototypes. At the end it runs the Table 6 evaluation.

    python benchmarks/head_collapse.py                                   # batch-normalised head
    python benchmarks/head_collapse.py --set head.batch_norm=false       # collapses in 50 steps
    python benchmarks/head_collapse.py --set head.batch_norm=false --set freeze_last_layer_steps=300
    python benchmarks/head_collapse.py --augmentation '{"local_scale": [0.25, 0.6]}'
"""

import argparse
import json
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="steps to train")
    parser.add_argument("--every", type=int, default=50, help="diagnose every N steps")
    parser.add_argument(
        "--schedule-steps", type=int, default=1500, help="length of the lr schedule (the table's)"
    )
    parser.add_argument("--row", choices=["silc_c", "silc_s"], default="silc_c")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-scenes", type=int, default=20_000)
    parser.add_argument("--probe-scenes", type=int, default=128, help="test scenes diagnosed")
    parser.add_argument("--set", action="append", default=[], help="model override KEY=VALUE")
    parser.add_argument(
        "--augmentation", default="{}", help="JSON merged into demo.FASHION_AUGMENTATION"
    )
    parser.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    args = parser.parse_args()

    import keras

    # The table's own setup, so that a probe is one of its runs (same directory as this script).
    from reproduce_table6 import FASHION_SCENE
    from reproduce_table6 import build_run

    from keras_silc import data
    from keras_silc import evaluation
    from keras_silc.experiments import fashion as demo

    model, dataset, _ = build_run(
        args.row,
        args.seed,
        steps=args.schedule_steps,
        batch_size=demo.DEMO_BATCH,
        num_scenes=args.num_scenes,
        vocabulary_size=1000,
        class_only_captions=1.0,
        overrides=args.set,
        augmentation=json.loads(args.augmentation),
        # The scenes its recorded probes ran on (docs/results.md).
        scene=FASHION_SCENE,
    )
    probe = data.fashion_scenes("test", args.probe_scenes, 64, seed=0)["image"]
    print(
        f"{args.row} seed {args.seed}, overrides {sorted(args.set)}, augmentation "
        f"{json.loads(args.augmentation)}; diagnostics on {args.probe_scenes} test scenes"
    )

    class Diagnose(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = batch + 1
            if step % args.every:
                return
            # `self.model`, not `model`: on JAX, Keras syncs the training state for it.
            teacher = evaluation.distillation_diagnostics(self.model, probe, tower="teacher")
            student = evaluation.distillation_diagnostics(self.model, probe, tower="student")
            print(
                f"step {step:5d}  distillation loss {logs['distillation_loss']:.3f} | teacher "
                f"entropy {teacher['entropy']:.2f}/{teacher['max_entropy']:.2f} cosine "
                f"{teacher['bottleneck_cosine']:.3f} prototypes {int(teacher['prototypes_used'])}"
                f" {teacher['collapse']} | student entropy {student['entropy']:.2f} cosine "
                f"{student['bottleneck_cosine']:.3f}",
                flush=True,
            )

    start = time.time()
    model.fit(dataset, steps_per_epoch=args.steps, epochs=1, verbose=0, callbacks=[Diagnose()])
    print(f"training: {time.time() - start:.0f} s")
    if not args.no_eval:
        results = demo.evaluate_fashion(model, shots=(10,))
        keys = ("zero_shot/top1", "few_shot/10shot_mean", "segmentation/miou")
        print("  ".join(f"{key} {100 * results[key]:.1f}" for key in keys if key in results))


if __name__ == "__main__":
    main()
