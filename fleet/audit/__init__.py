"""The append-only audit log: every state change, who made it and when."""
