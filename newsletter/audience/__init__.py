"""The people on the list: joining, leaving, importing, exporting, erasing.

``subscriptions`` (the rules, with an event per change), ``confirmation`` and ``welcome``
(the double opt-in mails), ``addresses`` (what an address must be), ``importing`` and
``exporting`` (CSV in and out, with ``firstseen`` and ``readahead`` for million-line files)
and ``privacy`` (a person's data, and erasure).
"""
