"""Carrier adapters: the built-in ones plus any registered under the
`msgroute.carriers` entry-point group (third-party packages add theirs there).
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

BUILTIN = {
    "sandbox": "carriers.sandbox:SandboxAdapter",
    "twilio": "carriers.twilio:TwilioAdapter",
    "vonage": "carriers.vonage:VonageAdapter",
    "smtp": "carriers.smtp:SmtpAdapter",
    "sendgrid": "carriers.sendgrid:SendgridAdapter",
    "fcm": "carriers.fcm:FcmAdapter",
    "apns": "carriers.apns:ApnsAdapter",
}


def available() -> dict[str, str]:
    """Adapter name -> "module:Class"; entry points may add names but not replace built-ins."""
    found = {ep.name: ep.value for ep in entry_points(group="msgroute.carriers")}
    return {**found, **BUILTIN}


def load_adapter_class(name: str):
    target = available().get(name)
    if target is None:
        raise KeyError(name)
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
