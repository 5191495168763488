"""Locustfiles holding one load shape each: add one after the user's locustfile with a comma."""
