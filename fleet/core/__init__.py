"""What every fleet domain shares: settings, the database, the error type and dependencies."""
