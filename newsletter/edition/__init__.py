"""One edition, from the store to a message: the pipeline's pure stages.

``content`` (the typed comparison values) -> ``selection`` (which comparisons go in) ->
``verdicts`` (the call on each) -> ``rendering`` (MJML, once per edition) ->
``personalization`` (the per-recipient splice) -> ``message`` (what a backend sends).
Beside them: ``timing`` (weekly rules, the period an edition covers), ``periods`` (the one
naming of a period), ``lifecycle`` (the edition's state machine), ``tokens`` (signed links),
``dkim`` (signing the message) and ``verp`` (its signed return path).
"""
