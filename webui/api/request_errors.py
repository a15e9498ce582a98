"""The 422 answer for a request field with a bad value, in FastAPI's validation shape plus `field`.

Used for a RequestError raised before a job is queued and for a job that failed on one (a value only
the loaded model could judge, e.g. a sampler the model's family has no use for).
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from webui.api.redact import public_text


def request_error_response(field: str, message: str) -> JSONResponse:
    message = public_text(message) or ""
    return JSONResponse(
        {
            "detail": [{"loc": ["body", *field.split(".")], "msg": message, "type": "value_error"}],
            "error": f"{field}: {message}",
            "field": field,
        },
        status_code=422,
    )
