"""``voice-agent kpi ...``: the Knowlarity account API from the command line.

Exit codes: 0 with Knowlarity's JSON on stdout; 1 when Knowlarity refused or could not
be reached (message on stderr); 2 on bad input or missing settings (nothing was sent).
``kpi events`` prints one JSON object per line until interrupted.

Wired into the main CLI with ``register(sub)``; also runs alone as ``python -m kpi ...``.
The client is imported inside the commands so ``voice-agent --help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from config.settings import Settings
    from kpi.client import KnowlarityClient

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


_DESCRIPTION = (
    "Knowlarity account API. Exit 0 with Knowlarity's JSON on stdout, 1 when Knowlarity "
    "refused or could not be reached, 2 on bad input or missing settings."
)


def register(subparsers: SubParsers) -> None:
    """Add the ``kpi`` command tree to the main ``voice-agent`` parser."""
    parser = subparsers.add_parser(
        "kpi",
        help="Knowlarity account API: outbound calls, OTP calls, notifications, live events",
        description=_DESCRIPTION,
    )
    add_commands(parser)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kpi makecall ...`` (the same commands as ``voice-agent kpi``)."""
    parser = argparse.ArgumentParser(prog="python -m kpi", description=_DESCRIPTION)
    add_commands(parser)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


def add_commands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kpi_command", required=True, metavar="COMMAND")

    call = sub.add_parser("makecall", help="ring the agent, then connect the customer")
    call.add_argument("--customer-number", required=True, help="E.164, e.g. +919876543210")
    call.add_argument("--agent-number", help="default: KNOWLARITY_AGENT_NUMBER")
    call.add_argument("--k-number", help="your Knowlarity number; default: KNOWLARITY_NUMBER")
    call.add_argument("--caller-id", help="optional caller id (E.164)")
    _add_whatsapp(call)
    call.set_defaults(func=_makecall)

    otp = sub.add_parser("otpcall", help="trigger an OTP voice call")
    otp.add_argument("--ivr-id", required=True, help="IVR / flow id (digits)")
    otp.add_argument("--customer-number", required=True, help="E.164")
    otp.add_argument("--k-number", help="default: KNOWLARITY_NUMBER")
    _add_whatsapp(otp)
    otp.set_defaults(func=_otpcall)

    notes = sub.add_parser("notifications", help="live-notification registrations")
    notes.add_argument("action", choices=["list", "register", "enable", "disable"])
    notes.add_argument(
        "--knowlarity-number",
        action="append",
        help="E.164; default KNOWLARITY_NUMBER (register takes several; list filters on it)",
    )
    notes.add_argument("--enabled", choices=["true", "false"], help="list: filter on enabled")
    notes.set_defaults(func=_notifications)

    events = sub.add_parser("events", help="print live call events, one JSON per line")
    events.set_defaults(func=_events)


def _add_whatsapp(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--whatsapp", action="store_true", help='WhatsApp Voice (channel "Whatsapp")'
    )
    parser.add_argument(
        "--call-permission-request",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ask the customer for WhatsApp calling permission (sent as false if omitted)",
    )


# --- commands --------------------------------------------------------------------------


def _makecall(args: argparse.Namespace) -> int:
    return _run(
        lambda client: client.makecall(
            args.customer_number,
            agent_number=args.agent_number,
            k_number=args.k_number,
            caller_id=args.caller_id,
            whatsapp=args.whatsapp,
            call_permission_request=args.call_permission_request,
        )
    )


def _otpcall(args: argparse.Namespace) -> int:
    return _run(
        lambda client: client.otpcall(
            args.ivr_id,
            args.customer_number,
            k_number=args.k_number,
            whatsapp=args.whatsapp,
            call_permission_request=args.call_permission_request,
        )
    )


def _notifications(args: argparse.Namespace) -> int:
    numbers: list[str] = args.knowlarity_number or []
    action: str = args.action
    if action != "register" and len(numbers) > 1:
        return _bad_input(f"notifications {action} takes one --knowlarity-number")
    if args.enabled is not None and action != "list":
        return _bad_input("--enabled is a filter of 'notifications list'")
    number = numbers[0] if numbers else None
    if action == "list":
        enabled = None if args.enabled is None else args.enabled == "true"
        return _run(lambda client: client.list_notifications(number, enabled))
    if action == "register":
        return _run(lambda client: client.register_notifications(numbers or None))
    return _run(lambda client: client.set_notifications(action == "enable", number))


def _events(args: argparse.Namespace) -> int:
    from contextlib import aclosing

    from kpi.client import KnowlarityClient, KpiConfig
    from kpi.errors import ConfigError

    settings = _settings()
    if settings is None:
        return 2

    async def follow() -> None:
        client = KnowlarityClient(KpiConfig.from_settings(settings.knowlarity))
        async with client, aclosing(client.events()) as events:
            async for event in events:
                sys.stdout.write(json.dumps(event.raw(), ensure_ascii=False) + "\n")
                sys.stdout.flush()

    try:
        asyncio.run(follow())
    except ConfigError as exc:
        return _bad_input(str(exc))
    except KeyboardInterrupt:
        return 0  # the normal way to stop following
    except BrokenPipeError:
        _quiet_stdout()  # the reader went away (e.g. `| head`)
    return 0


# --- plumbing --------------------------------------------------------------------------


def _run(operation: Callable[[KnowlarityClient], Awaitable[Any]]) -> int:
    from kpi.client import KnowlarityClient, KpiConfig
    from kpi.errors import ConfigError, InputError, KnowlarityError

    settings = _settings()
    if settings is None:
        return 2

    async def once() -> Any:
        async with KnowlarityClient(KpiConfig.from_settings(settings.knowlarity)) as client:
            return await operation(client)

    try:
        result = asyncio.run(once())
    except (InputError, ConfigError) as exc:
        return _bad_input(str(exc))
    except KnowlarityError as exc:
        print(f"error: Knowlarity: {exc}", file=sys.stderr)
        return 1
    try:
        print(json.dumps(result.raw(), ensure_ascii=False, indent=2))
    except BrokenPipeError:
        _quiet_stdout()
    return 0


def _settings() -> Settings | None:
    from pydantic import ValidationError

    from config.logs import setup_logging
    from config.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"error: invalid settings:\n{exc}", file=sys.stderr)
        return None
    setup_logging(settings.server.log_level, settings.secrets())
    return settings


def _bad_input(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _quiet_stdout() -> None:
    # Python would report the broken pipe again when flushing stdout at exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
