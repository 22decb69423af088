"""scrypt password hashes: self-describing, salted, uniform failure for unknown users."""

from __future__ import annotations

import base64

from proxy.identity import passwords


async def test_hash_and_verify():
    encoded = await passwords.hash_password("s3cret é")
    assert encoded.startswith("scrypt$16384$8$1$") and "s3cret" not in encoded
    assert await passwords.verify_password("s3cret é", encoded)
    assert not await passwords.verify_password("s3cret", encoded)
    assert await passwords.hash_password("x") != await passwords.hash_password("x")  # salted


async def test_unknown_user_and_garbage_hashes_fail():
    assert not await passwords.verify_password("anything", None)
    for bad in ("", "md5$abc", "scrypt$x$8$1$AA==$AA==", "scrypt$16384$8$1$!!$AA=="):
        assert not await passwords.verify_password("anything", bad)
    # The dummy hash used for unknown users is well-formed (so it costs a real scrypt).
    scheme, n, r, p, salt, digest = passwords._DUMMY.split("$")
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
