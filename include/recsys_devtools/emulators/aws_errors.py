"""AWS's JSON error shape, shared by the AWS fakes: ``{"__type", "message"}`` with ``x-amzn-ErrorType``,
which botocore parses into ``ClientError`` (``Error.Code`` / ``Error.Message``)."""

from __future__ import annotations

from starlette.responses import JSONResponse


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status

    def response(self, media_type: str = "application/x-amz-json-1.1") -> JSONResponse:
        return JSONResponse(
            {"__type": self.code, "message": self.message},
            status_code=self.status,
            headers={"x-amzn-ErrorType": self.code},
            media_type=media_type,
        )
