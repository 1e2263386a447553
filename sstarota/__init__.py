"""sstarota: an open, byte-compatible reimplementation of SigmaStar's OTA tool chain."""

__version__ = "0.1.0"
