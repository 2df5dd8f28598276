"""The studio's customers: contact details, notes, and what is shared with them."""
