"""Admin HTTP routes for a CRM or backend: place calls and OTP calls, manage notification
registrations, read recent live events. Every route needs ``Authorization: Bearer
ADMIN_API_TOKEN``; without that setting they all answer 503.

Errors: 401 bad/missing token, 422 bad input (nothing sent), 502 Knowlarity refused
(``detail.status`` is Knowlarity's HTTP status), 504 no answer in time, 503 not configured.
"""

# No `from __future__ import annotations`: FastAPI must see the real types of the
# route parameters, including the `Service` alias local to build_router.

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, SecretStr

from kpi.errors import ConfigError, InputError, KnowlarityError, KnowlarityTransportError
from kpi.models import (
    MakeCallBody,
    MakeCallResult,
    MessageResult,
    NotificationList,
    OtpCallBody,
    OtpCallResult,
    RecentEventsResponse,
    RegisterNotificationsBody,
    SetNotificationsBody,
)
from kpi.service import KpiService

T = TypeVar("T", bound=BaseModel)


class ErrorDetail(BaseModel):
    message: str
    status: int | None = None  # Knowlarity's HTTP status, when it answered


class ErrorResponse(BaseModel):
    detail: ErrorDetail | str


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong admin token"},
    502: {"model": ErrorResponse, "description": "Knowlarity refused the request"},
    503: {"model": ErrorResponse, "description": "ADMIN_API_TOKEN or Knowlarity keys not set"},
    504: {"model": ErrorResponse, "description": "Knowlarity did not answer in time"},
}


def admin_refusal(authorization: str | None, token: SecretStr | None) -> tuple[int, str] | None:
    """(status, detail) when ``Authorization`` does not carry ADMIN_API_TOKEN, else None.

    Used twice: by the routes, and by the app's body guard before any body is read.
    """
    expected = token.get_secret_value().strip() if token is not None else ""
    if not expected:
        return (
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the /api routes are disabled: set ADMIN_API_TOKEN to enable them",
        )
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.encode()
    ):
        return (
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong admin token (Authorization: Bearer ADMIN_API_TOKEN)",
        )
    return None


def check_admin(token: SecretStr | None, request: Request) -> None:
    """The routes' guard (also the call records'): an HTTP error unless the request
    carries ADMIN_API_TOKEN."""
    refusal = admin_refusal(request.headers.get("authorization"), token)
    if refusal is not None:
        code, detail = refusal
        headers = {"WWW-Authenticate": "Bearer"} if code == status.HTTP_401_UNAUTHORIZED else None
        raise HTTPException(code, detail, headers=headers)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Bad input is 422 with each error's place and reason, never the input echoed back:
    it may be large, and it may not even be JSON (a body of ``Infinity`` parses to a float
    that FastAPI's own handler then failed to encode: a 500 from bad input)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {
            "loc": [part if isinstance(part, int) else str(part) for part in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]
    return JSONResponse({"detail": detail}, status.HTTP_422_UNPROCESSABLE_CONTENT)


def build_router(get_service: Callable[[], KpiService]) -> APIRouter:
    """The ``/api`` routes; ``get_service`` returns the app's single :class:`KpiService`."""
    Service = Annotated[KpiService, Depends(get_service)]

    def require_admin(request: Request, service: Service) -> None:
        check_admin(service.settings.admin_api_token, request)

    router = APIRouter(
        prefix="/api",
        tags=["knowlarity"],
        dependencies=[Depends(require_admin)],
        responses=_ERRORS,
    )

    @router.post("/calls", response_model=MakeCallResult, response_model_exclude_unset=True)
    async def make_call(body: MakeCallBody, service: Service) -> MakeCallResult:
        """Place an outbound call (Knowlarity makecall): the agent's phone rings first."""
        return await _call(
            lambda: service.client.makecall(
                body.customer_number,
                agent_number=body.agent_number,
                k_number=body.k_number,
                caller_id=body.caller_id,
                whatsapp=body.whatsapp,
                call_permission_request=body.call_permission_request,
            )
        )

    @router.post("/otp-calls", response_model=OtpCallResult, response_model_exclude_unset=True)
    async def otp_call(body: OtpCallBody, service: Service) -> OtpCallResult:
        """Trigger an OTP voice call (Knowlarity otpcall)."""
        return await _call(
            lambda: service.client.otpcall(
                body.ivr_id,
                body.customer_number,
                k_number=body.k_number,
                whatsapp=body.whatsapp,
                call_permission_request=body.call_permission_request,
            )
        )

    @router.get(
        "/notifications", response_model=NotificationList, response_model_exclude_unset=True
    )
    async def list_notifications(
        service: Service,
        knowlarity_number: Annotated[str | None, Query(description="E.164 filter")] = None,
        enabled: Annotated[bool | None, Query(description="Filter on enabled")] = None,
    ) -> NotificationList:
        """Numbers registered for live notifications (all pages)."""
        return await _call(lambda: service.client.list_notifications(knowlarity_number, enabled))

    @router.post("/notifications", response_model=MessageResult, response_model_exclude_unset=True)
    async def register_notifications(
        body: RegisterNotificationsBody, service: Service
    ) -> MessageResult:
        """Register numbers for live call notifications (default: KNOWLARITY_NUMBER)."""
        return await _call(lambda: service.client.register_notifications(body.knowlarity_number))

    @router.put("/notifications", response_model=MessageResult, response_model_exclude_unset=True)
    async def set_notifications(body: SetNotificationsBody, service: Service) -> MessageResult:
        """Enable or disable notifications of a registered number."""
        return await _call(
            lambda: service.client.set_notifications(
                body.enable == "enable", body.knowlarity_number
            )
        )

    @router.get("/events", response_model=RecentEventsResponse)
    async def recent_events(
        service: Service,
        limit: Annotated[int, Query(ge=1, le=100_000, description="At most this many")] = 100,
    ) -> RecentEventsResponse:
        """The most recent live call events and CDRs seen by the server's consumer."""
        return RecentEventsResponse(
            configured=service.events_configured,
            running=service.running,
            connected=service.connected,
            events=service.recent_events(limit),
        )

    return router


async def _call(operation: Callable[[], Awaitable[T]]) -> T:
    """Run one Knowlarity operation, mapping its failures to HTTP answers."""
    try:
        return await operation()
    except InputError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except ConfigError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    except KnowlarityTransportError as exc:
        code = status.HTTP_504_GATEWAY_TIMEOUT if exc.timed_out else status.HTTP_502_BAD_GATEWAY
        raise HTTPException(code, {"message": exc.message, "status": None}) from exc
    except KnowlarityError as exc:
        detail = {"message": exc.message, "status": exc.status}
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, detail) from exc
