"""The public web app: subscribe, confirm, unsubscribe (RFC 8058), archive, webhooks, admin.

``create_app`` in :mod:`newsletter.web.app` builds it; nothing happens at import time.
"""
