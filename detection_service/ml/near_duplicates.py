"""Near-duplicate images by a 256-bit difference hash (dHash).

Roboflow exports repeat frames across splits: about 30% of the doorbell valid images have an
almost identical frame in train (shared/datasets/README.md). Metrics on such images say how well
a model remembers, not how it does at a door it has not seen, so evaluation sets leave them out.

dHash: the grey image shrunk to 17x16, one bit per horizontally adjacent pair (left brighter than
right): 16 x 16 = 256 bits. Two images whose hashes differ in at most ``max_bits`` bits (default 5,
the figure the datasets README uses) are near-duplicates. Robust to JPEG re-encoding, resizing and
small brightness changes; a flip or rotation (Roboflow's augmented copies) is a different hash, so
those copies are not caught, which is what we want: they are not the same picture.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

HASH_BITS = 256
DEFAULT_MAX_BITS = 5


def dhash(image: np.ndarray | str | Path) -> np.ndarray:
    """The 256-bit dHash as 32 packed bytes (uint8). Accepts a BGR/grey array or a file path."""
    if not isinstance(image, np.ndarray):
        data = np.fromfile(str(image), np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise ValueError(f"cannot decode {image!r}")
    elif image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(image, (17, 16), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = small[:, :-1] > small[:, 1:]
    return np.packbits(bits.reshape(-1))


def hash_files(paths: Iterable[Path]) -> tuple[list[Path], np.ndarray]:
    """(paths that decoded, their hashes as an (n, 32) uint8 array)."""
    kept: list[Path] = []
    hashes: list[np.ndarray] = []
    for path in paths:
        try:
            hashes.append(dhash(path))
        except ValueError:
            continue
        kept.append(Path(path))
    return kept, (np.stack(hashes) if hashes else np.zeros((0, HASH_BITS // 8), np.uint8))


def _popcount_table() -> np.ndarray:
    return np.array([bin(i).count("1") for i in range(256)], np.uint8)


_POPCOUNT = _popcount_table()


def min_distances(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """For each query hash, the Hamming distance to its nearest reference hash (256 if none)."""
    if len(references) == 0:
        return np.full(len(queries), HASH_BITS, np.int32)
    out = np.empty(len(queries), np.int32)
    for i, q in enumerate(queries):  # (n_ref, 32) XOR per query: fast enough for thousands
        out[i] = _POPCOUNT[np.bitwise_xor(references, q)].sum(axis=1, dtype=np.int32).min()
    return out


def near_duplicates(
    candidates: Iterable[Path], references: Iterable[Path], max_bits: int = DEFAULT_MAX_BITS
) -> set[Path]:
    """The candidate images that have a near-duplicate among ``references``."""
    cand_paths, cand_hashes = hash_files(candidates)
    _, ref_hashes = hash_files(references)
    distances = min_distances(cand_hashes, ref_hashes)
    return {path for path, d in zip(cand_paths, distances) if d <= max_bits}
