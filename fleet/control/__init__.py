"""Commands to devices through their gateway's ``cmd/`` topics, and the gateway's acks."""
