"""Fixtures of the reliability/security tests; helpers live in uniquely named modules."""

from security_support import secured

__all__ = ["secured"]
