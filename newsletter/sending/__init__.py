"""Sending an edition: the ledger and the loop that works through it.

``dispatch`` (claim, re-check, personalize, send, record), ``ledger`` (one Delivery row per
recipient, the only code that changes one), ``journal`` (each sender's write-ahead file), the
rate limits (``ratelimit``, ``sharedrate``, ``domainrate``), the reputation breaker, one-off
notices, progress, and the redaction of secrets in what providers answer. The
backends themselves are :mod:`newsletter.backends` (a plugin seam).
"""
