"""The outbox: e-mail over SMTP and admin alerts through apprise, delivered with retries."""
