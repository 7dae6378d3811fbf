"""Secrets at rest: face templates and payment tokens sealed with AES-256-GCM.

Each sealed value is `b"c1" | 12-byte random nonce | ciphertext+tag`. The associated data is
`cabinet/<purpose>/<account id>`, so a ciphertext opens only as what it was sealed for: a
template moved to another account's row, or a token pasted into a template column, fails the
tag check instead of identifying the wrong person or charging the wrong card.

The 32-byte key lives outside the database: a key file named by the configuration (or
`CABINET_KEY_FILE`), holding either the 32 raw bytes or 64 hex digits. Make one with
`cabinet accounts keygen FILE`, or `openssl rand -hex 32 > FILE && chmod 600 FILE`. A missing
file, a file of the wrong size or a wrong key is a `SecretError` that names the file.
"""
from __future__ import annotations

import os
import secrets as _random
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = b"c1"
PURPOSES = ("face_template", "payment_token")
KEY_FILE_ENV = "CABINET_KEY_FILE"


class SecretError(ValueError):
    """A key that cannot be used, or a sealed value that does not open."""


class SecretBox:
    """Seals and opens the cabinet's secrets with one key; `origin` names it in errors."""

    def __init__(self, key: bytes, *, origin: str = "the given key"):
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
            size = len(key) if isinstance(key, (bytes, bytearray)) else type(key).__name__
            raise SecretError(f"{origin}: a key is {KEY_BYTES} bytes, got {size}; make one "
                              f"with `cabinet accounts keygen FILE`")
        self._aead = AESGCM(bytes(key))
        self.origin = origin

    def __repr__(self) -> str:  # never the key
        return f"SecretBox({self.origin})"

    def seal(self, plaintext: bytes, *, account_id: int, purpose: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, bytes(plaintext),
                                                    _associated(account_id, purpose))

    def open(self, sealed: bytes, *, account_id: int, purpose: str) -> bytes:
        where = f"{purpose} of account {account_id}"
        sealed = bytes(sealed)
        if not sealed.startswith(VERSION) or len(sealed) < len(VERSION) + NONCE_BYTES + 16:
            raise SecretError(f"{where}: not a sealed value (stored in plain text by an older "
                              f"cabinet?); run init_db with the key to migrate it")
        nonce = sealed[len(VERSION):len(VERSION) + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[len(VERSION) + NONCE_BYTES:],
                                      _associated(account_id, purpose))
        except InvalidTag:
            raise SecretError(f"{where} does not open with {self.origin}: a different key, "
                              f"or the value belongs to another account or purpose") from None

    def seal_text(self, text: str, *, account_id: int, purpose: str) -> bytes:
        return self.seal(text.encode("utf-8"), account_id=account_id, purpose=purpose)

    def open_text(self, sealed: bytes, *, account_id: int, purpose: str) -> str:
        return self.open(sealed, account_id=account_id, purpose=purpose).decode("utf-8")


def _associated(account_id: int, purpose: str) -> bytes:
    if purpose not in PURPOSES:
        raise SecretError(f"sealing: unknown purpose {purpose!r}; one of {', '.join(PURPOSES)}")
    if isinstance(account_id, bool) or not isinstance(account_id, int) or account_id <= 0:
        raise SecretError(f"sealing {purpose}: account id {account_id!r} must be a positive "
                          f"integer (flush the new account first)")
    return f"cabinet/{purpose}/{account_id}".encode()


def read_key_bytes(path: str | Path, what: str = "key file", missing_hint: str = "") -> bytes:
    """The 32-byte key in a key file: 32 raw bytes, or 64 hex digits (a newline allowed).

    Every error is a SecretError naming `what` and the path; `missing_hint` replaces the
    default advice for a file that is not there."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        hint = missing_hint or (f"make one with `cabinet accounts keygen {path}` (or "
                                f"`openssl rand -hex 32 > {path}`)")
        raise SecretError(f"{what} {path}: not found; {hint}") from None
    except OSError as e:
        raise SecretError(f"{what} {path}: cannot be read ({e.strerror})") from None
    if len(data) == KEY_BYTES:
        return data
    text = data.strip()
    try:
        key = bytes.fromhex(text.decode("ascii")) if len(text) == 2 * KEY_BYTES else b""
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise SecretError(f"{what} {path}: {len(data)} bytes; a key file holds "
                          f"{KEY_BYTES} raw bytes or {2 * KEY_BYTES} hex digits. Make one "
                          f"with `cabinet accounts keygen FILE`")
    return key


def load_key_file(path: str | Path) -> SecretBox:
    """The SecretBox of a key file: 32 raw bytes, or 64 hex digits (a newline allowed)."""
    path = Path(path).expanduser()
    return SecretBox(read_key_bytes(path), origin=f"key file {path}")


def write_key_file(path: str | Path) -> Path:
    """A new random key in `path` (64 hex digits, mode 0600); an existing file is kept."""
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise SecretError(f"key file {path}: the folder {path.parent} does not exist")
    if path.exists():
        raise SecretError(f"key file {path}: already exists; a new key would make every "
                          f"template and token sealed with the old one unreadable")
    # Written whole under a temporary name, then linked: a reader never sees half a key,
    # and of two processes making it at once exactly one wins.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_random.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(_random.token_hex(KEY_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        raise SecretError(f"key file {path}: already exists; a new key would make every "
                          f"template and token sealed with the old one unreadable") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def key_for_database(url: str) -> SecretBox:
    """The key of a database when nobody passed one: `CABINET_KEY_FILE`, else for a SQLite
    file `<file>.key` beside it (made on first use, mode 0600). Other databases need the
    key file named."""
    named = os.environ.get(KEY_FILE_ENV)
    if named:
        return load_key_file(named)
    prefix = "sqlite:///"
    if url.startswith(prefix) and url[len(prefix):] not in ("", ":memory:"):
        path = Path(url[len(prefix):].split("?", 1)[0])
        path = path.with_name(path.name + ".key")
        if not path.exists():
            try:
                write_key_file(path)
            except SecretError:
                if not path.exists():
                    raise           # not another process making it at the same moment
        return load_key_file(path)
    raise SecretError(f"database {url}: no key for its templates and tokens; set "
                      f"{KEY_FILE_ENV} to a key file (cabinet accounts keygen FILE)")
