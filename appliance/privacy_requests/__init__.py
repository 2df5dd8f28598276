"""Clients' own privacy requests (GDPR Art. 15, 16, 17, 20) and their one-month deadline."""
