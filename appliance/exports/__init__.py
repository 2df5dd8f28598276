"""Exports of everything the appliance holds about one person (GDPR Art. 15 and 20)."""
