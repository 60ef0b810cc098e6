"""Forward passes of a fitted ReLU MLPClassifier in batch with numpy: sklearn's arithmetic for training
(`forward`, `forward_from_first_layer`) and the serving network (`ServingNet`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, softmax
from sklearn.neural_network import MLPClassifier

log = logging.getLogger(__name__)

BLOCK_ROWS = 64  # rows per dense product in the serving network (see `ServingNet`)


def forward(model: MLPClassifier, features: sp.csr_matrix) -> tuple[list[np.ndarray], np.ndarray]:
    """Post-ReLU hidden activations of every hidden layer and the class probabilities (n, n_classes)."""
    if model.activation != "relu":
        raise ValueError("the forward pass assumes a ReLU network")
    first = np.asarray(features @ model.coefs_[0])
    first += model.intercepts_[0]
    return forward_from_first_layer(model, first)


def forward_from_first_layer(model: MLPClassifier, first: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """As `forward`, given the first hidden layer's pre-activation (features @ W1 + b1)."""
    hidden: list[np.ndarray] = []
    activation = first
    last = len(model.coefs_) - 1
    for layer in range(len(model.coefs_)):
        if layer > 0:
            activation = np.asarray(activation @ model.coefs_[layer])
            activation += model.intercepts_[layer]
        if layer < last:
            np.maximum(activation, 0, out=activation)
            hidden.append(activation)
    return hidden, _probabilities(activation, model.out_activation_)


def _probabilities(logits: np.ndarray, out_activation: str) -> np.ndarray:
    if out_activation == "logistic":
        positive = expit(logits[:, 0])
        return np.column_stack([1 - positive, positive])
    if out_activation == "softmax":
        return softmax(logits, axis=1)
    raise ValueError(f"unsupported output activation {out_activation!r}")


class ServingNet:
    """The network as the stream runs it: float32, and each row's output independent of its batch.

    A dense matrix product's result for one row depends on the shape of the product it is part of (BLAS
    picks kernels and blocking by shape, and a single row goes through matrix-vector code), so the same
    item scored in two micro-batches of different sizes would differ in the last bits. Here every dense
    product has one shape: blocks of exactly `block_rows` rows, the last one zero-padded. Within one
    shape, rows are computed independently and identically, so a row's output is bit-for-bit the same
    whatever batch it arrives in, at float32's cost (half of float64's). The sparse first layer is
    computed row by row anyway. `reproducible` checks the property on the BLAS this process loaded; where
    it does not hold, `serving_net` falls back to float64 products whose outputs are rounded (as the
    stream rounds all outputs), which makes a difference between batches vanishingly rare instead.
    """

    def __init__(
        self,
        coefs: Sequence[np.ndarray],
        intercepts: Sequence[np.ndarray],
        out_activation: str,
        dtype: type[np.floating] = np.float32,
        block_rows: int | None = BLOCK_ROWS,
    ) -> None:
        self.first_weights = np.ascontiguousarray(coefs[0], dtype=np.float32)
        self.first_intercept = np.asarray(intercepts[0], dtype=np.float32)
        self.weights = [np.ascontiguousarray(c, dtype=dtype) for c in coefs[1:]]
        self.intercepts = [np.asarray(b, dtype=dtype) for b in intercepts[1:]]
        self.out_activation = out_activation
        self.dtype = dtype
        self.block_rows = block_rows

    def first_layer(self, features: sp.csr_matrix) -> np.ndarray:
        """features @ W1 + b1 (float32; a sparse product is computed row by row)."""
        first = np.asarray(features @ self.first_weights, dtype=np.float32)
        first += self.first_intercept
        return first

    def proba(self, first: np.ndarray) -> np.ndarray:
        """Class probabilities (float64) from first-layer pre-activations."""
        first = np.ascontiguousarray(first, dtype=self.dtype)
        n = first.shape[0]
        rows = self.block_rows or max(n, 1)
        logits = np.empty((n, self.weights[-1].shape[1]), dtype=np.float64)
        padded = np.zeros((rows, first.shape[1]), dtype=self.dtype) if n % rows else None
        for start in range(0, n, rows):
            block = first[start : start + rows]
            size = block.shape[0]
            if size < rows and self.block_rows is not None:
                assert padded is not None
                padded[:size] = block
                block = padded
            logits[start : start + size] = self._dense(block)[:size]
        return _probabilities(logits, self.out_activation)

    def _dense(self, first: np.ndarray) -> np.ndarray:
        activation = np.maximum(first, 0)
        last = len(self.weights) - 1
        for layer, (weights, intercept) in enumerate(zip(self.weights, self.intercepts, strict=True)):
            activation = activation @ weights
            activation += intercept
            if layer < last:
                np.maximum(activation, 0, out=activation)
        return activation

    def reproducible(self, seed: int = 0) -> bool:
        """Whether rows scored alone, in a batch and in another order come out bit-for-bit the same here."""
        rows = self.block_rows or 1
        probe = np.random.default_rng(seed).standard_normal((2 * rows + 3, self.first_weights.shape[1]))
        probe = probe.astype(np.float32)
        whole = self.proba(probe)
        reverse = self.proba(probe[::-1])[::-1]
        picked = (0, rows, len(probe) - 1)
        alone = [self.proba(probe[i : i + 1])[0] for i in picked]
        return bool(
            np.array_equal(whole, reverse)
            and all(np.array_equal(one, whole[i]) for one, i in zip(alone, picked, strict=True))
        )


def serving_net(model: MLPClassifier, temperature: float = 1.0) -> ServingNet:
    """`model`'s `ServingNet`, its output layer divided by `temperature`; float64 where this BLAS does not
    give batch-independent float32 rows (logged)."""
    if model.activation != "relu":
        raise ValueError("the forward pass assumes a ReLU network")
    coefs = [np.asarray(c, dtype=np.float64) for c in model.coefs_]
    intercepts = [np.asarray(b, dtype=np.float64) for b in model.intercepts_]
    coefs[0], intercepts[0] = model.coefs_[0], model.intercepts_[0]  # the first layer as trained
    if temperature != 1.0:
        coefs[-1] = coefs[-1] / temperature
        intercepts[-1] = intercepts[-1] / temperature
    net = ServingNet(coefs, intercepts, model.out_activation_)
    if net.reproducible():
        return net
    log.warning("float32 products are not batch-independent on this BLAS: serving in float64")
    return ServingNet(coefs, intercepts, model.out_activation_, dtype=np.float64, block_rows=None)
