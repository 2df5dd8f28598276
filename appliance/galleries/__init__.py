"""Galleries: a client's photos, in sets, with a status and an expiry date."""
