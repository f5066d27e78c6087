"""Weekly AI Tool Verdicts: a newsletter publishing engine.

Data flows one way: store -> selection -> verdicts -> rendering -> personalization -> dispatch ->
ledger. ``newsletter.publish`` joins the stages; nothing is built at import time.
"""

__version__ = "0.1.0"
