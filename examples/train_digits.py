"""Train a handwritten-digit classifier with chainrule, from Python.

The worksheet's update rule, ``w -= step_size * gradient``, repeated over mini-batches: this is
all ``chainrule train digits`` does, written out. Run it with

    python examples/train_digits.py            # needs scikit-learn for the data set

and it prints the loss and accuracy after each epoch and the final test accuracy (about 98%).
"""

from __future__ import annotations

import sys
import time

import numpy as np

import chainrule as cr


def main(epochs: int = 20, seed: int = 0) -> float:
    """Train and return the test accuracy."""
    # 1. data: 1797 images of 8×8 pixels, flattened to 64 numbers, labels 0..9
    X, y = cr.data.load_digits()
    X_train, X_test, y_train, y_test = cr.data.train_test_split(X, y, test_size=0.2, seed=seed)
    X_train, X_test = cr.data.standardize(X_train, X_test)  # statistics from the training set only

    # 2. model: 64 → 256 → 128 → 10 scores, ReLU between the layers
    rng = np.random.default_rng(seed)
    model = cr.nn.Sequential(
        cr.nn.Linear(64, 256, rng=rng), cr.nn.ReLU(),
        cr.nn.Linear(256, 128, rng=rng), cr.nn.ReLU(),
        cr.nn.Linear(128, 10, rng=rng),
    )
    optimizer = cr.optim.Adam(model.parameters(), lr=1e-3)
    print(model, f"\n{model.num_parameters():,} parameters")

    # 3. training: forward, loss, backward (fills every p.grad), step (updates every p in place)
    start = time.perf_counter()
    batches = cr.data.batches(X_train, y_train, batch_size=32, shuffle=True, seed=rng)
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for xb, yb in batches:
            loss = cr.nn.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(yb)

        # 4. evaluation: no graph needed, dropout (if any) off
        model.eval()
        with cr.no_grad():
            accuracy = float(np.mean(model(X_test).numpy().argmax(axis=1) == y_test))
        print(f"epoch {epoch + 1:2d}  train loss {total / len(X_train):.4f}  test accuracy {accuracy:.2%}")

    print(f"final test accuracy: {accuracy:.2%} after {epochs} epochs in {time.perf_counter() - start:.1f} s")
    return accuracy


if __name__ == "__main__":
    main(epochs=int(sys.argv[1]) if len(sys.argv) > 1 else 20)
