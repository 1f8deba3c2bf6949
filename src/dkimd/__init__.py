"""dkimd: a DKIM signing and verifying milter for Postfix, a drop-in for OpenDKIM."""

__version__ = "0.1.0"
