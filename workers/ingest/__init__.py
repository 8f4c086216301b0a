"""Accepting a message, alike for the HTTP gateway and the AMQP ingest consumer: ingest-time
policy (SSRF, abuse, suspensions), sender pools, admission against backlogs, and turning a
validated request into the accepted envelope and its store row."""
