"""Live push to browsers: alarm changes streamed as server-sent events, filtered by RBAC."""
