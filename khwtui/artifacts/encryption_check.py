"""The apiserver's encrypted storage format, and the verdict on one value read from etcd.

KTHW's smoke test eyeballs a hexdump for the `k8s:enc:aescbc:v1:key1:` prefix. A prefix proves
little on its own (any writer can put it there), so the verdict also decrypts the value with the
cluster's own key, as the apiserver would, and looks for the plaintext in the result:
- aescbc: prefix + IV (16 bytes) + AES-256-CBC(PKCS#7-padded data) — k8s.io/apiserver
  storage/value/encrypt/aes (cbc.TransformToStorage / TransformFromStorage).
- secretbox: prefix + nonce (24 bytes) + NaCl secretbox(data) (Poly1305 tag first, as Go's
  secretbox.Seal and libsodium's crypto_secretbox_easy both write it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from khwtui.artifacts.encryption import KEY_BYTES, PROVIDERS

KEY_NAME = "key1"  # the only key the encryption config names (templates/encryption-config.yaml.j2)
BLOCK = 16
NONCE = 24
ENVELOPE = b"k8s:enc:"


class DecryptError(ValueError):
    """The stored bytes do not decrypt with the given key."""


def prefix(provider: str, key_name: str = KEY_NAME) -> bytes:
    return f"k8s:enc:{provider}:v1:{key_name}:".encode()


def encode(provider: str, key: bytes, data: bytes, key_name: str = KEY_NAME) -> bytes:
    """`data` as the apiserver stores it with `provider` and `key` (tests write these into etcd)."""
    _check(provider, key)
    if provider == "aescbc":
        iv = os.urandom(BLOCK)
        padder = padding.PKCS7(BLOCK * 8).padder()
        padded = padder.update(data) + padder.finalize()
        encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        return prefix(provider, key_name) + iv + encryptor.update(padded) + encryptor.finalize()
    from nacl.secret import SecretBox

    return prefix(provider, key_name) + bytes(SecretBox(key).encrypt(data, os.urandom(NONCE)))


def decode(provider: str, key: bytes, stored: bytes, key_name: str = KEY_NAME) -> bytes:
    """The data behind `stored`; DecryptError when the prefix, the sizes, the padding or the tag say no."""
    _check(provider, key)
    head = prefix(provider, key_name)
    if not stored.startswith(head):
        raise DecryptError(f"does not start with {head.decode()}")
    body = stored[len(head):]
    if provider == "aescbc":
        return _aescbc(key, body)
    from nacl.exceptions import CryptoError
    from nacl.secret import SecretBox

    if len(body) < NONCE + SecretBox.MACBYTES:
        raise DecryptError(f"{len(body)} bytes after the prefix, shorter than a nonce and a tag")
    try:
        return SecretBox(key).decrypt(body[NONCE:], body[:NONCE])
    except CryptoError:
        raise DecryptError("the secretbox tag does not verify with this key") from None


def _aescbc(key: bytes, body: bytes) -> bytes:
    if len(body) < 2 * BLOCK or len(body) % BLOCK:
        raise DecryptError(f"{len(body)} bytes after the prefix: not an IV and whole AES blocks")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(body[:BLOCK])).decryptor()
    padded = decryptor.update(body[BLOCK:]) + decryptor.finalize()
    unpadder = padding.PKCS7(BLOCK * 8).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise DecryptError("the PKCS#7 padding is wrong after decrypting with this key") from None


def _check(provider: str, key: bytes) -> None:
    if provider not in PROVIDERS:
        raise ValueError(f"encryption provider {provider!r} is not one of {', '.join(PROVIDERS)}")
    if len(key) != KEY_BYTES:
        raise ValueError(f"an encryption key has {KEY_BYTES} bytes, not {len(key)}")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    summary: str  # one line in the user's words: what is right or wrong


def judge(stored: bytes, provider: str, key: bytes, plaintext: bytes, key_name: str = KEY_NAME) -> Verdict:
    """Is `stored` (a Secret's bytes in etcd) encrypted with this cluster's provider and key, and
    does it decrypt back to a value holding `plaintext`?"""
    head = prefix(provider, key_name)
    if plaintext in stored:
        how = "with an encryption prefix" if stored.startswith(ENVELOPE) else "without any k8s:enc: prefix"
        return Verdict(False, f"the secret is stored in plaintext in etcd ({how}): its value {plaintext.decode(errors='replace')!r} is readable")
    if not stored.startswith(head):
        return Verdict(False, f"the stored value starts with {_shown(stored[: len(head)])}, not {head.decode()}: "
                              f"the apiserver is not encrypting secrets with {provider} {key_name}")
    try:
        data = decode(provider, key, stored, key_name)
    except DecryptError as exc:
        return Verdict(False, f"the stored value has the {head.decode()} prefix but does not decrypt with this cluster's key ({exc})")
    if plaintext not in data:
        return Verdict(False, f"the stored value decrypts with this cluster's key, but not to the secret's value {plaintext.decode(errors='replace')!r}")
    extra = NONCE if provider == "secretbox" else BLOCK
    return Verdict(True, f"{len(stored)} bytes: {head.decode()} + {extra}-byte {'nonce' if provider == 'secretbox' else 'IV'} + "
                         f"{len(stored) - len(head) - extra} bytes of ciphertext; decrypts with the cluster's key to the secret's value")


def _shown(data: bytes) -> str:
    """Bytes as a reader can compare them: printable ASCII as is, the rest escaped."""
    return repr(data)[1:]
