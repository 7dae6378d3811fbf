"""The catalog and planogram in force: the files the cabinet sells from, and their history.

They live under the configuration's `data_dir`, in `in-force/`:

    in-force/catalog.yaml, in-force/planogram.yaml      the files in force now
    in-force/history/<kind>/000001.yaml ...              every earlier version, newest last
    in-force/history/<kind>/undone/000002.yaml ...       versions a rollback took out of force

Until the first apply there are no files here: the configuration's `catalog:` and `planogram:`
are in force, and reading writes nothing. The first apply (or rollback) copies them in.

Every write is atomic: the bytes go to a temporary file in the same folder, are fsync'ed, and
`os.replace` puts them in place (then the folder is fsync'ed), so a crash or power cut leaves
either the old file whole or the new one whole, never a mix. An apply first keeps the current
bytes as the next history version, then replaces the current file; a rollback keeps the current
bytes under undone/, puts the newest history version back in force, then drops it from the
history. A crash between those steps leaves a history top equal to the file in force, which
both operations recognise and skip, so repeating the command finishes the job. One operator at
a time: operations hold an exclusive lock on `in-force/.lock`.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from cabinet.errors import CabinetError

KINDS = ("catalog", "planogram")
_VERSION = re.compile(r"^(\d{6})\.yaml$")

Rename = Callable[[str | os.PathLike, str | os.PathLike], None]


def for_config(config: Any, *, rename: Rename = os.replace) -> "InForce":
    """The store of a cabinet configuration (`cabinet.config.Config`): under its data_dir,
    seeded from its `catalog:` and `planogram:`. The controller reads `store.path(kind)`."""
    return InForce(config.data_path, {"catalog": config.catalog_path,
                                      "planogram": config.planogram_path}, rename=rename)


def atomic_write(path: Path, data: bytes, *, rename: Rename = os.replace) -> None:
    """Write `data` to `path` so that a crash leaves the old file whole or the new one whole.

    `rename` is `os.replace`; tests pass one that fails to stand for a crash before it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    rename(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class InForce:
    """The in-force store under `data_dir`; `seeds` names the configuration's files per kind."""

    def __init__(self, data_dir: Path, seeds: Mapping[str, Path], *,
                 rename: Rename = os.replace):
        unknown = set(seeds) - set(KINDS)
        if unknown:
            raise ValueError(f"in-force store: unknown kinds {sorted(unknown)}; use {KINDS}")
        self.root = Path(data_dir) / "in-force"
        self.seeds = {kind: Path(p) for kind, p in seeds.items()}
        self._rename = rename

    # --- reading (never writes) -------------------------------------------------------------
    def path(self, kind: str) -> Path:
        """The file in force: the store's copy, or the configuration's file before the first
        apply."""
        own = self._own(kind)
        if own.exists():
            return own
        return self._seed(kind)

    def read(self, kind: str) -> bytes:
        path = self.path(kind)
        try:
            return path.read_bytes()
        except OSError as e:
            raise CabinetError(f"{path}: cannot read the {kind} in force ({e.strerror}); "
                               f"check data_dir and `{kind}:` in the configuration") from None

    def history(self, kind: str) -> list[Path]:
        """Earlier versions, oldest first."""
        folder = self.root / "history" / kind
        if not folder.is_dir():
            return []
        return sorted((p for p in folder.iterdir() if _VERSION.match(p.name)),
                      key=lambda p: p.name)

    def previous(self, kind: str) -> bytes | None:
        """The version a rollback would put back, or None when there is none."""
        current = self.read(kind)
        for path in reversed(self.history(kind)):
            data = path.read_bytes()
            if data != current:
                return data
        return None

    # --- writing ----------------------------------------------------------------------------
    def apply(self, kind: str, data: bytes) -> None:
        """Put `data` in force; the bytes in force now become the newest history version."""
        with self._locked():
            current = self.read(kind)
            self._seed_if_needed(kind, current)
            history = self.history(kind)
            if not history or history[-1].read_bytes() != current:
                atomic_write(self._next_version(kind), current, rename=self._rename)
            atomic_write(self._own(kind), data, rename=self._rename)

    def rollback(self, kind: str) -> bytes:
        """Put the newest earlier version back in force; returns the bytes it replaced."""
        with self._locked():
            current = self.read(kind)
            history = self.history(kind)
            while history and history[-1].read_bytes() == current:
                history.pop().unlink()   # left by a crash between the steps below
            if not history:
                raise CabinetError(f"{kind}: no earlier version to roll back to "
                                   f"(history in {self.root / 'history' / kind} is empty)")
            top = history[-1]
            self._seed_if_needed(kind, current)
            atomic_write(self.root / "history" / kind / "undone" / top.name, current,
                         rename=self._rename)
            atomic_write(self._own(kind), top.read_bytes(), rename=self._rename)
            top.unlink()
            _fsync_dir(top.parent)
            return current

    # --- inside -----------------------------------------------------------------------------
    def _own(self, kind: str) -> Path:
        self._check(kind)
        return self.root / f"{kind}.yaml"

    def _seed(self, kind: str) -> Path:
        self._check(kind)
        if kind not in self.seeds:
            raise CabinetError(f"no {kind} in force in {self.root} and none named in the "
                               f"configuration; set `{kind}:` there")
        return self.seeds[kind]

    def _seed_if_needed(self, kind: str, current: bytes) -> None:
        if not self._own(kind).exists():
            atomic_write(self._own(kind), current, rename=self._rename)

    def _next_version(self, kind: str) -> Path:
        folder = self.root / "history" / kind
        numbers = [int(m.group(1)) for p in (folder.iterdir() if folder.is_dir() else ())
                   if (m := _VERSION.match(p.name))]
        undone = folder / "undone"
        numbers += [int(m.group(1)) for p in (undone.iterdir() if undone.is_dir() else ())
                    if (m := _VERSION.match(p.name))]
        return folder / f"{max(numbers, default=0) + 1:06d}.yaml"

    @staticmethod
    def _check(kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"in-force store: unknown kind '{kind}'; use {KINDS}")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
