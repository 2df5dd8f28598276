"""Backups: restic repositories, recovery points, retention, off-site copies, checks, drills."""
