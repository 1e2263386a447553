"""Bytecode for the board (host side): the unchecked-hash .pyc the bundle and the runtime store."""

import importlib.util


def pyc(source, arcname):
    """The .pyc of source (bytes) compiled as arcname: hash-based and unchecked, so a Python of
    this minor version loads it without looking at the source or its timestamp."""
    from importlib._bootstrap_external import _code_to_hash_pyc

    code = compile(source, arcname, "exec", dont_inherit=True)
    return bytes(_code_to_hash_pyc(code, importlib.util.source_hash(source), checked=False))
