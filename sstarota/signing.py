"""Signatures over the manifest: Ed25519 and ECDSA P-256 keys in PEM, through the
pure-Python `ecdsa` package (no hand-written cryptography).

Why `ecdsa`: it is pure Python (with its one dependency, `six`), so it goes into the board
zipapp and runs on any board Python (Debian's armhf python3 ships no `cryptography`, and
a native wheel would tie the bundle to one ABI); it does both Ed25519 and NIST P-256 and
reads and writes their PEM keys. The board imports it only when a signature is checked.

Key id: the first 8 bytes of the SHA-256 of the public key's DER (SubjectPublicKeyInfo),
in hex. ECDSA signatures are deterministic (RFC 6979) over SHA-256, stored as r||s.
"""

import hashlib
import os

from .errors import InputError, PackageError, UsageError
from .fsutil import read_small
from .manifest import Signature, signed_message

ALGS = {"ed25519": "Ed25519", "p256": "NIST256p"}
#: the largest key file read: a PEM key is a few hundred bytes
KEY_LIMIT = 64 << 10


def _ecdsa():
    try:
        import ecdsa
    except ImportError:
        raise PackageError("signature checks need the 'ecdsa' Python package, which is missing") from None
    return ecdsa


def alg_of(key):
    name = key.curve.name
    for alg, curve in ALGS.items():
        if name == curve:
            return alg
    raise InputError("a %s key: only Ed25519 and ECDSA P-256 keys are supported" % name)


def key_id(vk):
    return hashlib.sha256(vk.to_der()).hexdigest()[:16]


def _read(path, what):
    """A key file: a regular file of at most KEY_LIMIT bytes (a FIFO is refused, not waited on)."""
    try:
        return read_small(path, KEY_LIMIT)
    except OSError as exc:
        raise InputError("cannot read %s %s: %s" % (what, path, exc.strerror or exc)) from None


def load_private(path):
    ecdsa = _ecdsa()
    try:
        sk = ecdsa.SigningKey.from_pem(_read(path, "the signing key"))
    except (ValueError, ecdsa.der.UnexpectedDER) as exc:
        raise InputError("%s is not an Ed25519 or P-256 private key in PEM: %s" % (path, exc)) from None
    alg_of(sk)
    return sk


def load_public(path):
    """A public key from a PEM file (a private key's file gives its public half)."""
    return public_from_pem(_read(path, "the public key"), path)


def public_from_pem(data, name):
    """A public key from the bytes of a PEM file named name (a private key gives its public half)."""
    ecdsa = _ecdsa()
    try:
        if b"PRIVATE KEY" in data:
            vk = ecdsa.SigningKey.from_pem(data).get_verifying_key()
        else:
            vk = ecdsa.VerifyingKey.from_pem(data)
    except (ValueError, ecdsa.der.UnexpectedDER) as exc:
        raise UsageError("%s is not an Ed25519 or P-256 public key in PEM: %s" % (name, exc)) from None
    alg_of(vk)
    return vk


def sign(sk, body_sha256):
    """The Signature of a manifest body (its SHA-256)."""
    msg = signed_message(body_sha256)
    alg = alg_of(sk)
    if alg == "ed25519":
        sig = sk.sign(msg)
    else:
        sig = sk.sign_deterministic(msg, hashfunc=hashlib.sha256)
    return Signature(alg, key_id(sk.get_verifying_key()), sig)


def _plain_generator(gen):
    """gen without its lazily built table of multiples: building that table costs more than the
    one verification a board makes per install (python-ecdsa builds it on a generator's first use)."""
    from ecdsa import ellipticcurve

    if isinstance(gen, ellipticcurve.PointEdwards):
        p = gen.curve().p()
        return ellipticcurve.PointEdwards(gen.curve(), gen.x(), gen.y(), 1, gen.x() * gen.y() % p, gen.order())
    return ellipticcurve.PointJacobi(gen.curve(), gen.x(), gen.y(), 1, gen.order())


def _verify_once(vk, alg, sig, msg):
    """python-ecdsa's own verification (eddsa.PublicKey / ecdsa.Public_key) over a plain generator."""
    from ecdsa import ecdsa as ec, eddsa, errors, numbertheory, util

    gen = _plain_generator(vk.curve.generator)
    if alg == "ed25519":
        try:
            return eddsa.PublicKey(gen, vk.to_string()).verify(msg, sig)
        except (ValueError, errors.MalformedPointError, numbertheory.Error):  # R is not a point, S too large
            return False
    if len(sig) != 64:
        return False
    r, s = util.sigdecode_string(sig, gen.order())
    digest = util.string_to_number(hashlib.sha256(msg).digest())
    return ec.Public_key(gen, vk.pubkey.point, verify=False).verifies(digest, ec.Signature(r, s))


def verify(vk, signature, body_sha256):
    """True when signature is vk's over the manifest body."""
    ecdsa = _ecdsa()
    if alg_of(vk) != signature.alg:
        return False
    msg = signed_message(body_sha256)
    try:
        return _verify_once(vk, signature.alg, signature.sig, msg)
    except ecdsa.BadSignatureError:
        return False


def generate(out, alg="p256"):
    """Write a new private key to OUT (mode 0600) and its public key to OUT.pub; returns the key id."""
    ecdsa = _ecdsa()
    if alg not in ALGS:
        raise UsageError("--key-type %r: ed25519 or p256" % alg)
    sk = ecdsa.SigningKey.generate(curve=getattr(ecdsa, ALGS[alg]))
    vk = sk.get_verifying_key()
    for path, data, mode in ((out, sk.to_pem(format="pkcs8"), 0o600), (out + ".pub", vk.to_pem(), 0o644)):
        if os.path.exists(path):
            raise UsageError("%s exists; not overwriting a key" % path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return key_id(vk)


def load_keys(paths):
    """{key id: verifying key} of PEM files; a directory gives its *.pem and *.pub files."""
    keys = {}
    for path in paths:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.endswith((".pem", ".pub")))
            files = [os.path.join(path, n) for n in names]
        else:
            files = [path]
        for f in files:
            vk = load_public(f)
            keys[key_id(vk)] = vk
    return keys
