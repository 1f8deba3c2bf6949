"""Key tools: what `dkimd genkey`, `testkey`, `genzone` and `check` are made of.

Kept apart from the CLI modules so each piece (key generation, DNS record text, key file
safety, key testing, the config linter) can be tested without parsing a command line.
"""
