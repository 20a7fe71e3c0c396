"""Tenants: their API keys and webhook secrets (``accounts.py``), and each key's rate limit (``ratelimit.py``)."""
