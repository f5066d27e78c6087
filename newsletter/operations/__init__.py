"""Running the newsletter: schedule files, reports, console people, the record.

``schedules`` (the TOML files; the processes that run them are :mod:`newsletter.service`),
``stats``, ``statsformat`` and ``chart`` (reports),
``alerts`` (mail to editors), ``accounts`` and ``passwords`` (console users), ``audit`` (who
changed what) and ``retention`` (pruning old deliveries, keeping their figures).
"""
