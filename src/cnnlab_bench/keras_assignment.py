"""The assignment's own Keras code as a benchmark contender: net_1 verbatim, `model.fit` on
arrays.

Runs in its own environment (`.venv-keras`, TensorFlow's CPU build; `make bench-keras` makes
it), so it imports nothing of cnnlab and no torch: `python keras_assignment.py ARRAYS.npz`
reads uint8 images (N x 28 x 28) and labels, normalises them as the assignment does, trains a
warm-up on the first `--warmup-steps` batches (TensorFlow traces and compiles its step there),
then one measured epoch over all the arrays with shuffling, and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no oneDNN / CUDA banner lines


def net_1(sample_shape: tuple[int, ...], nb_classes: int):
    """The assignment's net_1, as its notebook writes it."""
    from keras.layers import Conv2D, Dense, Flatten, Input, MaxPooling2D
    from keras.models import Model

    input_x = Input(shape=sample_shape)
    x = Conv2D(32, (3, 3), padding="same", activation="relu")(input_x)
    x = Conv2D(64, (3, 3), padding="same", activation="relu")(x)
    x = MaxPooling2D(pool_size=(2, 2), padding="same")(x)
    x = Flatten()(x)
    x = Dense(128, activation="relu")(x)
    probabilities = Dense(nb_classes, activation="softmax")(x)
    return Model(inputs=input_x, outputs=probabilities)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("arrays", help=".npz with uint8 'images' (N x 28 x 28) and 'labels'")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--optimizer", default="adam", help="a Keras optimizer name")
    parser.add_argument("--warmup-steps", type=int, default=50)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    from keras.utils import to_categorical

    arrays = np.load(args.arrays)
    x = (arrays["images"].astype("float32") / 255.0)[..., None]  # the assignment's normalize_images
    y = to_categorical(arrays["labels"], 10)
    model = net_1(x.shape[1:], 10)
    model.compile(loss="categorical_crossentropy", optimizer=args.optimizer, metrics=["accuracy"])
    warm = args.warmup_steps * args.batch_size
    model.fit(x[:warm], y[:warm], batch_size=args.batch_size, epochs=1, verbose=0)
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=True)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "train_s": seconds,
                "images": len(x),
                "train_images_per_s": len(x) / seconds,
                "loss": float(history.history["loss"][-1]),
                "tensorflow": tf.__version__,
                "threads": {
                    "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
