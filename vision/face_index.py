"""A gallery for very many templates: a uint8 first pass that provably misses nothing near.

The exact search (vision.faces.FaceGallery) reads every float32 template: 512 MB for a million,
about 80-150 ms a frame on the 2 shared cores we measure on, far from the 20 ms target. The
decision (vision/identity.py) only needs the accounts within refuse_distance of the face, so
this index answers that range question exactly while reading a quarter of the bytes:

- every template is stored twice: as float32 (for the exact answer) and as uint8 codes of
  `(template - centre) / step` rounded (centre = the gallery's mean, step = the largest
  centred coordinate / 127), with `err_max`, the largest distance between a template and its
  decoded code (measured, not assumed);
- a face is coded the same way (its own error `err_q` measured, clipping included), and the
  integer squared distance of every code to it is `|c|^2 + |q|^2 - 2 c.q`, exact in int32
  (at most 128 * 255^2 < 2^24): the dot products come from onnxruntime's integer GEMM
  (MatMulInteger over the codes held as a constant, which it packs once for its AVX2 /
  AVX-512 VNNI kernels and splits over `threads` threads; 1 x 128 by 128 x N), and by the
  triangle inequality `|face - t| >= step * sqrt(code distance) - err_q - err_max`;
- so every template whose first-pass bound is within `within` is re-measured exactly in float32
  and every other one is provably farther than `within`: the accounts (and distances) reported
  within `within` are exactly the exact search's. Beyond it, nothing is reported, which the
  decision treats as "farther than refuse_distance" (it never decides on those).

`cabinet bench faces` checks that the decisions on every trial are the same as the exact
search's, inside galleries of 10k to 1M templates.
"""
from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from vision.faces import ENCODING_SIZE, _check_encoding


class FaceIndex:
    """Read-only index over (account id, template) pairs; `account_distances` as FaceGallery's."""

    def __init__(self, account_ids: Sequence[str], templates: np.ndarray, *,
                 threads: int | None = None) -> None:
        matrix = np.ascontiguousarray(templates, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != ENCODING_SIZE or len(matrix) != len(account_ids):
            raise ValueError(f"face index: need {len(account_ids)} templates of {ENCODING_SIZE} "
                             f"floats, got shape {matrix.shape}")
        if len(matrix) == 0:
            raise ValueError("face index: no templates; enrol someone first")
        if not np.isfinite(matrix).all():
            raise ValueError("face index: a template holds a non-finite value")
        threads = min(2, os.cpu_count() or 1) if threads is None else threads
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"face index: threads {threads!r} must be a whole number >= 1")
        self.matrix = matrix
        # one int32 per template, one string per account (not a string object per template)
        numbers: dict[str, int] = {}
        self.account_of = np.fromiter((numbers.setdefault(str(a), len(numbers))
                                       for a in account_ids), dtype=np.int32, count=len(matrix))
        self.accounts = np.asarray(list(numbers), dtype=object)
        self.centre = matrix.mean(axis=0, dtype=np.float64).astype(np.float32)
        spread = float(np.abs(matrix - self.centre).max()) if len(matrix) < 200_000 else \
            max(float(np.abs(chunk - self.centre).max()) for chunk in np.array_split(matrix, 16))
        self.step = max(spread, 1e-6) / 127.0
        codes = np.empty((len(matrix), ENCODING_SIZE), dtype=np.uint8)
        err_max = 0.0
        for lo in range(0, len(matrix), 65536):  # in slices: no second float copy of the gallery
            block = matrix[lo:lo + 65536]
            codes[lo:lo + 65536] = self._code(block)
            err = np.linalg.norm(block - self._decode(codes[lo:lo + 65536]), axis=1)
            err_max = max(err_max, float(err.max()))
        self.err_max = err_max
        self.code_norms = np.einsum("ij,ij->i", codes, codes, dtype=np.int32)  # |c|^2, exact
        self.threads = min(threads, len(matrix))
        self._session = _dot_session(codes, self.threads)
        del codes                                  # the session holds (and has packed) them
        self.code_nbytes = len(matrix) * ENCODING_SIZE
        self.candidates_last = 0  # how many templates the last search re-measured (for benches)
        # one search at a time through the preallocated buffers (no 4 MB page faults a search)
        self._lock = threading.Lock()
        self._dots = np.empty((1, len(matrix)), dtype=np.int32)
        self._work = np.empty(len(matrix), dtype=np.int32)
        self._mask = np.empty(len(matrix), dtype=bool)
        self._binding = self._session.io_binding()
        self._binding.bind_output("dots", "cpu", 0, np.int32, list(self._dots.shape),
                                  self._dots.ctypes.data)

    def __len__(self) -> int:
        return len(self.matrix)

    @property
    def nbytes(self) -> int:
        """The arrays' bytes (float32 templates, uint8 codes, account numbers, the account
        table's pointers); the account id strings come on top, one per account."""
        return self.matrix.nbytes + self.code_nbytes + self.code_norms.nbytes + \
            self.account_of.nbytes + self.accounts.nbytes

    def _code(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint((x - self.centre) / self.step) + 128.0, 0, 255).astype(np.uint8)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return (codes.astype(np.float32) - 128.0) * self.step + self.centre

    def _dot(self, code: np.ndarray) -> None:
        """Every template's code dotted with `code` (1 x 128 uint8), into self._dots."""
        self._binding.bind_cpu_input("face", np.ascontiguousarray(code, dtype=np.uint8))
        self._session.run_with_iobinding(self._binding)

    def code_distances(self, code: np.ndarray) -> np.ndarray:
        """The integer squared distance of every template's code to `code` (1 x 128 uint8), as
        float32 (exact: every value is an integer below 2^24)."""
        with self._lock:
            self._dot(code)
            sq = self.code_norms - 2 * self._dots[0] + int(np.square(code, dtype=np.int32).sum())
        return sq.astype(np.float32)

    def _within_code(self, code: np.ndarray, limit: int) -> np.ndarray:
        """Rows whose integer code distance to `code` is at most `limit`."""
        with self._lock:
            self._dot(code)
            work = np.multiply(self._dots[0], -2, out=self._work)
            np.add(work, self.code_norms, out=work)
            # |c|^2 - 2 c.q <= limit - |q|^2, all in int32 without overflow (|values| < 2^25)
            np.less_equal(work, limit - int(np.square(code, dtype=np.int32).sum()), out=self._mask)
            return np.flatnonzero(self._mask)

    def close(self) -> None:
        """Release the packed codes (the index answers no more searches)."""
        with self._lock:
            self._session = self._binding = None

    def near(self, encoding: np.ndarray, within: float, skip: np.ndarray | None = None,
             ) -> tuple[np.ndarray, np.ndarray]:
        """(template rows, exact distances) of every template within `within` of the encoding.

        `skip` (bool per template) leaves templates out, as if they were not enrolled.
        """
        enc = _check_encoding(encoding)
        code = self._code(enc[None, :])
        err_q = float(np.linalg.norm(enc - self._decode(code)[0]))
        reach = (within + err_q + self.err_max) / self.step
        rows = self._within_code(code, min(int(np.ceil(reach * reach)) + 1, 2**30))
        if skip is not None:
            rows = rows[~skip[rows]]
        self.candidates_last = len(rows)
        exact = np.sqrt(np.maximum(
            ((self.matrix[rows] - enc) ** 2).sum(axis=1, dtype=np.float32), 0.0))
        keep = exact <= within
        return rows[keep], exact[keep]

    def account_distances(self, encodings: Sequence[np.ndarray], within: float,
                          skip: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per account within `within` of some encoding, its nearest template's distance in each
        encoding (inf where it is farther than `within` in that one); others are left out."""
        found: dict[str, np.ndarray] = {}
        for j, enc in enumerate(encodings):
            rows, dist = self.near(enc, within, skip)
            for account_id, d in zip(self.accounts[self.account_of[rows]], dist):
                per_frame = found.setdefault(account_id, np.full(len(encodings), np.inf))
                per_frame[j] = min(per_frame[j], float(d))
        return found


def exact_account_distances(matrix: np.ndarray, account_ids: np.ndarray,
                            encodings: Sequence[np.ndarray], within: float,
                            skip: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The plain float32 search with the FaceIndex's answer shape: the reference it must match."""
    norms = np.einsum("ij,ij->i", matrix, matrix)
    found: dict[str, np.ndarray] = {}
    for j, enc in enumerate(encodings):
        enc = _check_encoding(enc)
        dist = np.sqrt(np.maximum(norms - 2.0 * (matrix @ enc) + float(enc @ enc), 0.0))
        if skip is not None:
            dist[skip] = np.inf
        rows = np.flatnonzero(dist <= within)
        for account_id, d in zip(account_ids[rows], dist[rows]):
            per_frame = found.setdefault(account_id, np.full(len(encodings), np.inf))
            per_frame[j] = min(per_frame[j], float(d))
    return found


def _dot_session(codes: np.ndarray, threads: int) -> ort.InferenceSession:
    """An onnxruntime session computing `face (1 x 128 uint8) @ codes.T` as int32, exactly."""
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["face", "codes"], ["dots"])], "face_codes",
        [helper.make_tensor_value_info("face", TensorProto.UINT8, [1, ENCODING_SIZE])],
        [helper.make_tensor_value_info("dots", TensorProto.INT32, [1, len(codes)])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(codes.T), "codes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    del graph
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # the cabinet's other work shares these cores: workers sleep between searches, not spin
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
