"""Accounts, roles scoped to an area subtree, session and API tokens, and the lockout policy."""
