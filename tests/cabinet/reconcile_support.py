"""Slot evidence written as strings, for the reconcile tests that build bundles in memory
(test_reconcile_cells, test_reconcile_swap, test_reconcile_rivals)."""
from __future__ import annotations

import numpy as np

from vision.diff import SlotEvidence

CHANGED = 0.3  # share of a cell in the change mask where an item left, arrived or was swapped


def cells(slot_id: str, before: str, after: str, changed: str = "", *, alike=None,
          gone=(), new=(), kept=()) -> SlotEvidence:
    """A slot read without a recogniser: 'X' an occupied cell, '.' an empty one; `changed`
    marks with '*' the cells whose pixels changed (default: those whose occupancy did);
    `alike` per cell (None: not compared); `gone`/`new` the looks that left and arrived, `kept`
    those of items that stayed in place."""
    occ_b, occ_a = tuple(c == "X" for c in before), tuple(c == "X" for c in after)
    if not changed:
        changed = "".join("*" if b != a else " " for b, a in zip(occ_b, occ_a))
    share = tuple(CHANGED if c == "*" else 0.0 for c in changed.ljust(len(before)))
    return SlotEvidence(slot_id, float(np.mean(share)), occ_b, occ_a, (None,) * len(before),
                        (None,) * len(after), 0.0, identified=False, cells_changed=share,
                        cells_alike=tuple(alike or ()), gone_looks=tuple(gone),
                        new_looks=tuple(new), kept_looks=tuple(kept))
