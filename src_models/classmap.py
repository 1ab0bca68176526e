"""`ClassMap`: the user's label ids and names, and the network's class indices.

Users paint ids that need not be contiguous (say 1 and 5); the network predicts
indices 0..K-1. A `ClassMap` translates both ways, so predictions come back with the
ids the user painted and a corrected prediction is new training data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = ["ClassMap", "UNPAINTED", "MAX_CLASS_ID", "check_label_values"]

#: Network target for pixels that carry no label; ignored by the loss.
UNPAINTED = -1

#: Largest label id the engine accepts (the top of uint16); lookup tables are sized by ids.
MAX_CLASS_ID = 65535


def check_label_values(labels, *, what: str = "Labels") -> np.ndarray:
    """Refuse label values that are not ids: the array back, or `InputError` with a sentence.

    Ids must be whole, finite, not negative and at most `MAX_CLASS_ID`. The check costs a
    few passes over the array and allocates nothing sized by the ids themselves, so a stray
    ``4e9`` cannot make a lookup table of 32 GB.

    Parameters
    ----------
    labels : array-like
        Painted labels or a mask, any shape.
    what : str
        How the sentence names the array ("Labels", "The labels of image 2", ...).
    """
    labels = np.asarray(labels)
    kind = labels.dtype.kind
    if kind not in "biuf":
        raise InputError(f"{what} must hold whole numbers (label ids), not values of type {labels.dtype}.")
    if labels.size == 0 or kind == "b":
        return labels
    if kind == "f":
        if not np.isfinite(labels).all():
            raise InputError(f"{what} contain NaN or infinite values; label ids must be whole numbers.")
        if (np.mod(labels, 1) != 0).any():
            raise InputError(f"{what} contain fractions; label ids must be whole numbers (save labels as integers).")
    low, high = labels.min(), labels.max()
    if low < 0:
        raise InputError(f"{what} contain negative values (such as {low:g}); label ids must be 0 or more.")
    if high > MAX_CLASS_ID:
        raise InputError(f"{what} contain the id {high:g}, above the largest allowed id {MAX_CLASS_ID}; "
                         "renumber the labels.")
    return labels


@dataclass(frozen=True)
class ClassMap:
    """Ordered label ids (one per network output) and their display names."""

    ids: tuple[int, ...]
    names: tuple[str, ...] = ()

    def __post_init__(self):
        ids = tuple(int(i) for i in self.ids)
        if len(set(ids)) != len(ids):
            raise ValueError(f"Class ids must be distinct, got {ids}.")
        if any(i < 0 for i in ids):
            raise ValueError(f"Class ids must not be negative, got {ids}.")
        if any(i > MAX_CLASS_ID for i in ids):
            raise ValueError(f"Class ids must be at most {MAX_CLASS_ID}, got {max(ids)}.")
        names = tuple(self.names) or tuple(_default_name(i) for i in ids)
        if len(names) != len(ids):
            raise ValueError(f"{len(ids)} class ids but {len(names)} names.")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "names", tuple(str(n) for n in names))

    @property
    def n_classes(self) -> int:
        return len(self.ids)

    @property
    def dtype(self) -> np.dtype:
        """Smallest unsigned dtype that holds every id (uint8, else uint16, else uint32)."""
        top = max(self.ids)
        if top <= np.iinfo(np.uint8).max:
            return np.dtype(np.uint8)
        if top <= np.iinfo(np.uint16).max:
            return np.dtype(np.uint16)
        return np.dtype(np.uint32)

    @classmethod
    def from_labels(cls, labels, *, dense: bool = False, names: dict | None = None) -> "ClassMap":
        """Build the map from painted label arrays.

        Parameters
        ----------
        labels : sequence of array-like
            Painted labels; 0 is "not painted" unless ``dense``.
        dense : bool
            Treat 0 as a class (background) for fully painted masks.
        names : dict, optional
            ``{id: name}`` for display; missing ids get a default name.
        """
        present: set[int] = set()
        for lab in labels:
            present.update(int(v) for v in np.unique(check_label_values(lab)))
        if not dense:
            present.discard(0)
        ids = tuple(sorted(present))
        names = names or {}
        return cls(ids, tuple(names.get(i, _default_name(i)) for i in ids))

    def to_index(self, labels) -> np.ndarray:
        """Map label ids to network indices (int64); unknown ids and unpainted 0 become -1."""
        labels = check_label_values(labels)
        lut_size = max(max(self.ids), int(labels.max(initial=0))) + 1
        lut = np.full(lut_size, UNPAINTED, dtype=np.int64)
        lut[list(self.ids)] = np.arange(self.n_classes)
        return lut[labels.astype(np.int64, copy=False)]

    def to_ids(self, index) -> np.ndarray:
        """Map network indices back to label ids, in `dtype`."""
        lut = np.asarray(self.ids, dtype=self.dtype)
        return lut[np.asarray(index)]

    def union(self, other: "ClassMap") -> "ClassMap":
        """This map followed by the ids of ``other`` that it lacks (existing indices keep their place)."""
        extra = [(i, n) for i, n in zip(other.ids, other.names) if i not in self.ids]
        return ClassMap(self.ids + tuple(i for i, _ in extra), self.names + tuple(n for _, n in extra))

    def to_dict(self) -> dict:
        return {"ids": list(self.ids), "names": list(self.names)}

    @classmethod
    def from_dict(cls, data: dict) -> "ClassMap":
        """The map `to_dict` wrote; `ValueError` with a sentence for ids that are not whole numbers in range."""
        ids = data["ids"]
        if not isinstance(ids, (list, tuple)) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ValueError(f"Class ids must be a list of whole numbers, got {ids!r}.")
        return cls(tuple(ids), tuple(data.get("names", ())))


def _default_name(label_id: int) -> str:
    return {0: "background"}.get(label_id, f"class {label_id}")
