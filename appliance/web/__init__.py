"""Web plumbing shared by every domain: security middleware, CSRF, guards, page rendering."""
