"""Reliability and security suite against the real server on the tiny model.

`make test` runs a CI-sized part; `make reliability` runs it at full size
(NIMCTL_RELIABILITY=full) and writes the figures to docs/reliability.md.
"""
