"""Temperature scaling: one positive number T that turns the MLP's scores into calibrated probabilities.

The output layer's logits are divided by T (`Classifier.temperature`), which keeps every prediction's label
and makes a confidence of 0.9 right about 9 times in 10 on data like the rows T was fitted on. T minimises
the negative log-likelihood of held-out rows the weights were not trained on (the validation split), never
of the dev set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.neural_network import MLPClassifier

from models.attribution import forward

# T ≥ 1: it only softens. The validation split is easier than live data (most of it is made by rules from
# the training names' kind), and often nearly separable, where the likelihood keeps rising as T → 0:
# sharpening to it would overstate confidence on the names that matter.
_LOG_BOUNDS = (0.0, np.log(50.0))


def logits(model: MLPClassifier, features: sp.csr_matrix) -> np.ndarray:
    """The output layer's pre-activations, (n, n_classes) (a binary model's one logit as [0, z])."""
    hidden, _ = forward(model, features)
    last = np.asarray(hidden[-1] @ model.coefs_[-1], dtype=np.float64) + model.intercepts_[-1]
    if last.shape[1] == 1:
        return np.column_stack([np.zeros(len(last)), last[:, 0]])
    return last


def fit_temperature(model: MLPClassifier, features: sp.csr_matrix, labels: Sequence[str]) -> float:
    """The T in [1, 50] that minimises the mean negative log-likelihood of `labels` under
    softmax(logits / T)."""
    scores = logits(model, features)
    classes = [str(c) for c in model.classes_]
    truth = np.asarray([classes.index(str(label)) for label in labels])
    rows = np.arange(len(truth))
    if not len(truth):
        return 1.0

    def loss(log_t: float) -> float:
        return float(-log_softmax(scores / np.exp(log_t), axis=1)[rows, truth].mean())

    result = minimize_scalar(loss, bounds=_LOG_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(round(np.exp(result.x), 6))
