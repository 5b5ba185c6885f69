"""Who is asking: one Authenticator per PARLEY_AUTH mode, credentials, per-user limits.

`web/auth.py` runs the configured Authenticator on every protected request; the user it returns
owns the sessions, calls and usage the request touches.
"""
