"""The HTTP gateway: ingest API, carrier webhooks, admin API, metrics and health."""
