"""Forward pass and gradient×input attribution for a fitted ReLU MLPClassifier, in batch with numpy."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, softmax
from sklearn.neural_network import MLPClassifier

from models.featurizer import TokenMatrix


def forward(model: MLPClassifier, features: sp.csr_matrix) -> tuple[list[np.ndarray], np.ndarray]:
    """Post-ReLU hidden activations of every hidden layer and the class probabilities (n, n_classes)."""
    if model.activation != "relu":
        raise ValueError("attribution assumes a ReLU network")
    hidden: list[np.ndarray] = []
    activation: sp.csr_matrix | np.ndarray = features
    last = len(model.coefs_) - 1
    for layer, (coef, intercept) in enumerate(zip(model.coefs_, model.intercepts_, strict=True)):
        activation = np.asarray(activation @ coef)
        activation += intercept
        if layer < last:
            np.maximum(activation, 0, out=activation)
            hidden.append(activation)
    if model.out_activation_ == "logistic":
        positive = expit(activation[:, 0])
        return hidden, np.column_stack([1 - positive, positive])
    if model.out_activation_ == "softmax":
        return hidden, softmax(activation, axis=1)
    raise ValueError(f"unsupported output activation {model.out_activation_!r}")


def first_layer_deltas(model: MLPClassifier, hidden: list[np.ndarray], predicted: np.ndarray) -> np.ndarray:
    """d(logit of the predicted class)/d(first-layer pre-activation), shape (n, first hidden width).

    A binary MLP has one logit for classes_[1]; the logit of classes_[0] is its negation, hence the sign.
    """
    last_coef = model.coefs_[-1]
    if last_coef.shape[1] == 1:
        sign = np.where(predicted == 1, 1.0, -1.0).astype(last_coef.dtype)
        delta = sign[:, None] * last_coef[:, 0][None, :]
    else:
        delta = last_coef.T[predicted]
    for layer in range(len(hidden) - 1, -1, -1):
        delta = delta * (hidden[layer] > 0)
        if layer > 0:
            delta = delta @ model.coefs_[layer].T
    return delta


def token_scores(model: MLPClassifier, tokens: TokenMatrix, deltas: np.ndarray) -> np.ndarray:
    """Attribution of each word occurrence: Σ over its columns of x_ij · (W1[j, :] @ delta1_i).

    Computed as (token rows @ W1) · delta1 of the owning item, which costs one extra sparse product of the
    size of the first layer's forward pass.
    """
    if tokens.matrix.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    projected = np.asarray(tokens.matrix @ model.coefs_[0])
    # gathered in the first layer's dtype: per word occurrence, a 512-wide row of the owning item's delta
    item_deltas = deltas.astype(projected.dtype, copy=False)[tokens.item_index]
    return np.einsum("ij,ij->i", projected, item_deltas).astype(np.float64)
