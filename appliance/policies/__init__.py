"""The studio's privacy policy (versioned, acknowledged by staff) and its sub-processors page."""
