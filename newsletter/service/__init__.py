"""The long-running processes and the steps they run: the entry points beside the CLI and web.

``scheduler`` (the idempotent step: draft, approve or hold, start, send), ``runner`` (the
APScheduler jobs, the worker loop, riding out database restarts), ``bounce_server`` (the
listener an MTA forwards bounce mail to) and ``bounce_intake`` (bounce mail turned into the
events webhooks give, handed to the breaker). Like the CLI and the web app, they change
editions only through :mod:`newsletter.publish`.
"""
