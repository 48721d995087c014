"""The fleet manager: registry, alarms, access control, audit and live push for a city's sensors.

Split by domain (``registry/``, ``alarms/``, ``auth/``, ``audit/``, ``notify/``, ``ingest/`` ...),
each with its SQLAlchemy models, pydantic schemas, a service holding the logic (no HTTP) and a
thin router. ``core/`` holds what they share: settings, the database, errors and dependencies.
Nothing is built at import: :func:`fleet.app.create_app` builds the engine, sessions and routes
from one :class:`fleet.core.settings.Settings`.

The fleet imports only ``contracts`` and ``hardware`` (never ``gateway`` or ``edgefleet``).
"""
