"""The exception tree.

    MsgrouteError
    ├── ConfigError            configuration file or environment is wrong (one line per problem)
    ├── ValidationError        a send request is refused: code + field, mapped to HTTP 400
    ├── UnavailableError       broker or store cannot be reached (one line, URL masked)
    └── CarrierError           raised by carrier adapters only
        ├── TemporaryFailure   not sent: try again later or elsewhere (refused connection, 5xx, 429)
        ├── OutcomeUnknown     the request may have reached the carrier but no answer came back
        └── PermanentFailure   this message can never go through this carrier
"""
from __future__ import annotations


class MsgrouteError(Exception):
    pass


class ConfigError(MsgrouteError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class ValidationError(MsgrouteError):
    def __init__(self, code: str, message: str, field: str | None = None, status: int = 400):
        self.code = code
        self.message = message
        self.field = field
        self.status = status
        super().__init__(f"{code}: {message}")

    def to_dict(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return error


class UnavailableError(MsgrouteError):
    pass


class CarrierError(MsgrouteError):
    def __init__(self, code: str, message: str, retry_after: float | None = None):
        self.code = code
        self.message = message
        self.retry_after = retry_after
        super().__init__(f"{code}: {message}")


class TemporaryFailure(CarrierError):
    pass


class PermanentFailure(CarrierError):
    pass


class OutcomeUnknown(CarrierError):
    """Sending again could deliver the message twice, so it is treated as sent without a carrier id:
    the receipt (which carries our id) or the receipt timeout settles it."""
