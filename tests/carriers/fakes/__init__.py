"""Fake carrier servers: real servers on 127.0.0.1 (ephemeral ports) speaking each
carrier's wire format, each started with a named behaviour (happy, server_error, ...)."""
