"""The apiserver's storage layout, pinned byte by byte with primitives independent of the module:
aescbc = prefix + IV(16) + AES-256-CBC(PKCS#7), secretbox = prefix + nonce(24) + tag(16) + XSalsa20."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from nacl.bindings import crypto_secretbox_open

from khwtui.artifacts.encryption_check import decode, encode, judge

KEY = bytes(range(32))
DATA = b"k8s\x00\n\x0c\n\x02v1\x12\x06Secret" + b"mydata"


def test_aescbc_is_the_prefix_then_a_16_byte_iv_then_cbc_blocks_of_pkcs7_padded_data() -> None:
    stored = encode("aescbc", KEY, DATA)
    head = b"k8s:enc:aescbc:v1:key1:"
    assert stored.startswith(head)
    iv, body = stored[len(head):len(head) + 16], stored[len(head) + 16:]
    assert len(body) == 32  # 24 bytes of data + 8 bytes of padding
    decryptor = Cipher(algorithms.AES(KEY), modes.CBC(iv)).decryptor()
    padded = decryptor.update(body) + decryptor.finalize()
    assert padded == DATA + bytes([8] * 8)


def test_secretbox_is_the_prefix_then_a_24_byte_nonce_then_the_sealed_box() -> None:
    stored = encode("secretbox", KEY, DATA)
    head = b"k8s:enc:secretbox:v1:key1:"
    nonce, box = stored[len(head):len(head) + 24], stored[len(head) + 24:]
    assert len(box) == len(DATA) + 16
    assert crypto_secretbox_open(box, nonce, KEY) == DATA


@pytest.mark.parametrize("provider", ["aescbc", "secretbox"])
def test_a_value_decodes_back_and_only_the_right_key_and_prefix_pass(provider: str) -> None:
    stored = encode(provider, KEY, DATA)
    assert decode(provider, KEY, stored) == DATA
    assert judge(stored, provider, KEY, b"mydata").ok
    assert not judge(stored, provider, os.urandom(32), b"mydata").ok
    other = "secretbox" if provider == "aescbc" else "aescbc"
    wrong = judge(stored, other, KEY, b"mydata")
    assert not wrong.ok and f"not k8s:enc:{other}:v1:key1:" in wrong.summary
