"""Forward pass of a fitted ReLU MLPClassifier in batch with numpy, from features or from the first layer."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, softmax
from sklearn.neural_network import MLPClassifier


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
    if model.out_activation_ == "logistic":
        positive = expit(activation[:, 0])
        return hidden, np.column_stack([1 - positive, positive])
    if model.out_activation_ == "softmax":
        return hidden, softmax(activation, axis=1)
    raise ValueError(f"unsupported output activation {model.out_activation_!r}")
