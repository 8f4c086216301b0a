"""The pure core of msgroute: types, validation, routing, rating and configuration.

Nothing in this package opens a socket or a file other than the configuration file.
"""
