"""``GET /api/calls`` and ``GET /api/calls/{call_id}``: the call records, admin token only.

(``POST /api/calls`` is makecall, in :mod:`kpi.routes`; the paths share a prefix only.)
"""

# No `from __future__ import annotations`: FastAPI must see the real parameter types.

import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status

from records.model import mask_number, parse_when
from records.store import CallQuery, RecordStore

EndReasonParam = Literal["caller_hangup", "transfer", "agent_disconnect", "timeout", "error"]
MAX_PAGE = 500


def build_router(
    get_store: Callable[[], RecordStore | None],
    guard: Callable[..., None],
    *,
    mask_numbers: bool,
) -> APIRouter:
    """The read routes; ``guard`` is the admin-token dependency, ``get_store`` the store
    (None when RECORDS_ENABLED is off)."""
    router = APIRouter(prefix="/api", tags=["call records"], dependencies=[Depends(guard)])

    def store() -> RecordStore:
        found = get_store()
        if found is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "call records are off: set RECORDS_ENABLED=true",
            )
        return found

    @router.get("/calls")
    async def list_calls(
        since: Annotated[str | None, Query(description="ISO 8601, epoch s, or age: 7d")] = None,
        until: Annotated[str | None, Query(description="ISO 8601, epoch s, or age")] = None,
        number: Annotated[str | None, Query(description="Knowlarity or customer number")] = None,
        end_reason: EndReasonParam | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Calls, newest first, without the per-turn detail (``GET /api/calls/{id}``)."""
        now = time.time()
        query = CallQuery(
            since=_when(since, now, "since"),
            until=_when(until, now, "until"),
            number=_number(number, mask_numbers),
            end_reason=end_reason,
            limit=limit,
            offset=offset,
        )
        records, total = await store().list(query)
        following = offset + len(records)
        return {
            "calls": [r.summary() for r in records],
            "total": total,
            "limit": limit,
            "offset": offset,
            "next_offset": following if following < total else None,
        }

    @router.get("/calls/{call_id}")
    async def get_call(call_id: str) -> dict[str, Any]:
        """The whole record of one call: turns, timings, barge-ins, errors, CDR."""
        record = await store().get(call_id)
        if record is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no record of call {call_id!r}")
        return record.to_dict()

    return router


def _when(text: str | None, now: float, name: str) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return parse_when(text, now)
    except ValueError as exc:
        raise HTTPException(422, f"{name}: {exc}") from None


def _number(text: str | None, mask: bool) -> str | None:
    """Numbers are stored masked when RECORDS_MASK_NUMBERS is on: compare masked forms."""
    if text is None or not text.strip():
        return None
    return mask_number(text) if mask else text.strip()
