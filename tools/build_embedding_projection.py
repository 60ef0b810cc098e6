"""Write models/features/data/navec_pca.npy: navec's first principal axes, the embedding block's projection.

    python -m tools.build_embedding_projection [--dims 32]

The axes are computed from every word vector navec ships (unit-normalised, centred), in float64, with each
axis's sign fixed so that its largest coordinate is positive. The file is part of the featurizer's identity
(`models.features.language.Language.identity`): rewriting it changes the featurizer version.
"""

from __future__ import annotations

import argparse

import numpy as np

from models.features.language import EMBEDDING_DIMS, PROJECTION_FILE, _natasha_embeddings


def projection(dims: int) -> np.ndarray:
    from navec import Navec

    pq = Navec.load(str(_natasha_embeddings())).pq
    vectors = np.concatenate(
        [pq.codes[q][pq.indexes[:, q]] for q in range(pq.qdim)], axis=1, dtype=np.float64
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    vectors -= vectors.mean(axis=0)
    _, _, axes = np.linalg.svd(vectors, full_matrices=False)
    axes = axes[:dims]
    signs = np.sign(axes[np.arange(dims), np.abs(axes).argmax(axis=1)])
    return (axes * signs[:, None]).T.astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, default=EMBEDDING_DIMS)
    args = parser.parse_args(argv)
    matrix = projection(args.dims)
    PROJECTION_FILE.parent.mkdir(parents=True, exist_ok=True)
    np.save(PROJECTION_FILE, matrix, allow_pickle=False)
    print(f"wrote {PROJECTION_FILE} {matrix.shape}")


if __name__ == "__main__":
    main()
