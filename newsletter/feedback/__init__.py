"""What comes back after a message went out: bounces, complaints, deliveries.

``bounces`` (store each provider event once and act on it), ``bounce_reports`` (DSN and ARF
parsing) and ``mailbox`` (IMAP and POP3 polling); the bounce listener and intake that use them
are in :mod:`newsletter.service`. Provider webhooks are parsed by :mod:`newsletter.webhooks` (a
plugin seam).
"""
