"""Staff accounts: users, roles, passwords, TOTP, recovery codes, sessions, invitations."""
