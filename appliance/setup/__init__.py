"""The first-run setup wizard and the studio's own settings."""
