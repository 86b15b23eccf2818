"""Errors the API returns as ``{code, message, hint}`` with an HTTP status."""

from __future__ import annotations


class ApiError(Exception):
    """An error with a stable ``code``, a message saying what and where, and a hint."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        reason: str = "",
        params: dict[str, str] | None = None,
    ) -> None:
        self.message = message
        self.hint = hint
        # For pages: the message is English for API clients and logs; a page shows the text
        # ``error.message.<reason>`` (else ``error.message.<code>``) of the user's language,
        # filled in with ``params`` (ingest/web/i18n/).
        self.reason = reason
        self.params = dict(params or {})
        super().__init__(message)

    def body(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class UnauthorizedError(ApiError):
    status = 401
    code = "unauthorized"


class ForbiddenError(ApiError):
    status = 403
    code = "forbidden"


class BadOriginError(ApiError):
    """A cookie-authenticated state change from a page that is not the app's (CSRF defence)."""

    status = 403
    code = "bad_origin"


class NotFoundError(ApiError):
    status = 404
    code = "not_found"


class BadInputError(ApiError):
    status = 422
    code = "bad_input"
