"""Errors the API returns as ``{code, message, hint}`` with an HTTP status."""

from __future__ import annotations

from typing import Any


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
        # filled in with ``params`` (monitoring/web/i18n/).
        self.reason = reason
        self.params = dict(params or {})
        super().__init__(message)

    def body(self) -> dict[str, Any]:
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


class RowsRejectedError(BadInputError):
    """Some rows of an imported file were refused; the good ones were written.

    The message lists every refused row as ``file:line: column: what``; the body adds the counts
    of what was written and the rows one by one, so a client can fix and resend only those.
    """

    def __init__(self, filename: str, rejected: list[str], created: int, updated: int) -> None:
        self.rejected = rejected
        self.created = created
        self.updated = updated
        super().__init__(
            f"{filename}: {len(rejected)} row(s) refused, {created} created and {updated} "
            f"updated from the others: " + "; ".join(rejected),
            hint="Fix the refused rows and import them again; the written rows need no resend.",
        )

    def body(self) -> dict[str, Any]:
        return {
            **super().body(),
            "rejected": self.rejected,
            "created": self.created,
            "updated": self.updated,
        }
