"""The cryptography secure aggregation is built on, from the `cryptography` package (the `secagg` extra):
X25519 key pairs and key agreement (HKDF-SHA256 over the shared secret), authenticated encryption of the
shares one site sends another (ChaCha20-Poly1305), and the seeded PRG that makes the masks (the ChaCha20
keystream, read as unsigned 64-bit words).

The package is optional: this module imports without it, and `require_cryptography()` is what the
workflow and the site's executor call first, so a missing extra is one clear line, not an ImportError deep
inside a round.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from fl_broker.errors import SecAggError

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    AVAILABLE = True
except ImportError:  # the optional extra is not installed: require_cryptography() says so
    AVAILABLE = False

MISSING = "secure aggregation needs the 'cryptography' package: pip install 'fl-broker[secagg]'"
KEY_BYTES = 32  # X25519 keys, derived keys and mask seeds
NONCE_BYTES = 12  # ChaCha20-Poly1305
PRG_BLOCK = 1 << 17  # words per keystream block: 1 MiB, so a mask never exists whole next to the model


def require_cryptography() -> None:
    """Raise SecAggError with one line saying how to install the extra, if it is missing."""
    if not AVAILABLE:
        raise SecAggError(MISSING)


@dataclass
class KeyPair:
    """One X25519 key pair of a site for one round."""

    private: X25519PrivateKey

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh random key pair."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> KeyPair:
        """The key pair of a private key given as its 32 raw bytes (e.g. reconstructed from shares)."""
        if len(raw) != KEY_BYTES:
            raise SecAggError(f"an X25519 private key has {KEY_BYTES} bytes, got {len(raw)}")
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        """The private key's 32 raw bytes (what a site secret-shares)."""
        return self.private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def public_bytes(self) -> bytes:
        """The public key's 32 raw bytes (what a site advertises)."""
        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def agree(self, peer_public: bytes, info: bytes) -> bytes:
        """A 32-byte key shared with the owner of `peer_public`, bound to `info` (who, which run and round,
        what for) so that one exchange never serves two purposes."""
        if not isinstance(peer_public, bytes) or len(peer_public) != KEY_BYTES:
            raise SecAggError(f"an X25519 public key has {KEY_BYTES} bytes, got {peer_public!r:.80}")
        try:
            shared = self.private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:  # a low-order point: the "shared" secret would be all zeros
            raise SecAggError(f"unusable X25519 public key: {exc}") from exc
        return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


def random_seed() -> bytes:
    """A fresh 32-byte seed (a site's self mask)."""
    return os.urandom(KEY_BYTES)


def encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """`plaintext` sealed under `key`, bound to `associated` (sender, receiver, run, round). The nonce is
    random and travels in front: both directions between two sites use the same agreed key."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def decrypt(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """What `encrypt` sealed; SecAggError if it was changed, or sealed for other associated data."""
    if not isinstance(sealed, bytes) or len(sealed) <= NONCE_BYTES:
        raise SecAggError("a sealed share is too short")
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag as exc:
        raise SecAggError("a sealed share does not open (altered, or not sealed for this site and round)") from exc


def add_mask(flat: np.ndarray, seed: bytes, label: str, sign: int) -> None:
    """`flat += sign * PRG(seed, label)` in place, modulo 2**64 (`flat` is a 1-D uint64 array). The PRG is
    the ChaCha20 keystream of `seed` with a nonce from `label` (the array's name), made a block at a time."""
    if len(seed) != KEY_BYTES:
        raise SecAggError(f"a mask seed has {KEY_BYTES} bytes, got {len(seed)}")
    nonce = bytes(4) + hashlib.sha256(label.encode()).digest()[:12]  # 32-bit block counter from 0
    stream = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor()
    zeros = memoryview(bytes(PRG_BLOCK * 8))
    combine = np.add if sign > 0 else np.subtract
    for start in range(0, flat.size, PRG_BLOCK):
        block = flat[start : start + PRG_BLOCK]
        words = np.frombuffer(stream.update(zeros[: block.size * 8]), dtype="<u8")
        combine(block, words, out=block)  # unsigned arithmetic wraps: exactly the ring's addition
