"""Pure parts of the KPI adapter: validators, error mapping, request builders, paging,
backoff and redaction. No sockets."""

from __future__ import annotations

import pytest

from kpi import validation
from kpi.errors import InputError, KnowlarityError, check_response
from kpi.models import PageMeta
from kpi.redaction import redact
from kpi.wire import (
    encode_query,
    makecall_body,
    next_page,
    notifications_filters,
    otpcall_query,
)

K, AGENT, CUSTOMER = "+911140000000", "+919810000001", "+919876543210"


# --- validators -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number", ["+919876543210", "+14155550123", "+12345678", " +919876543210 "]
)
def test_e164_accepts(number: str) -> None:
    assert validation.e164(number, "n") == number.strip()


@pytest.mark.parametrize(
    "number",
    [
        "919876543210",  # no plus
        "+91 98765 43210",  # separators
        "+1234567",  # 7 digits
        "+1234567890123456",  # 16 digits
        "+0919876543210",  # no country code starts with 0
        "+91987654321x",
        "",
        None,
    ],
)
def test_e164_refuses(number: str | None) -> None:
    with pytest.raises(InputError) as caught:
        validation.e164(number, "customer_number")
    assert caught.value.field == "customer_number"
    assert "E.164" in str(caught.value)


def test_ivr_id_digits_only() -> None:
    assert validation.ivr_id("1000012345") == "1000012345"
    for bad in ("", "10a", "1 2", "-1", None):
        with pytest.raises(InputError):
            validation.ivr_id(bad)


def test_channel_canonical_spelling() -> None:
    assert validation.channel("premium") == "Premium"
    assert validation.channel("Basic") == "Basic"
    with pytest.raises(InputError):
        validation.channel("Gold")


def test_settings_channel_any_case_and_secrets() -> None:
    from config.settings import Settings

    settings = Settings(
        _env_file=None,
        knowlarity_channel="enterprise",
        knowlarity_api_key="api-key-1234",
        knowlarity_sr_api_key="sr-key-5678",
        admin_api_token="admin-token-9-long-enough",
        knowlarity_base_url="https://kpi.example/",
    )
    assert settings.knowlarity.channel == "Enterprise"
    assert settings.knowlarity.base_url == "https://kpi.example"
    assert {"api-key-1234", "sr-key-5678", "admin-token-9-long-enough"} <= set(settings.secrets())
    assert settings.knowlarity.kpi_configured
    assert settings.knowlarity.konnect_configured
    bare = Settings(_env_file=None)
    assert bare.knowlarity.base_url == "https://kpi.knowlarity.com"
    assert bare.knowlarity.notifications_url == "https://konnect.knowlarity.com:8100"
    assert bare.knowlarity.channel == "Basic"
    assert not bare.knowlarity.kpi_configured
    assert not bare.knowlarity.konnect_configured


# --- request builders ---------------------------------------------------------------------


def test_makecall_body_pstn() -> None:
    body = makecall_body(k_number=K, agent_number=AGENT, customer_number=CUSTOMER)
    assert body == {"k_number": K, "agent_number": AGENT, "customer_number": CUSTOMER}


def test_makecall_body_whatsapp_and_caller_id() -> None:
    body = makecall_body(
        k_number=K,
        agent_number=AGENT,
        customer_number=CUSTOMER,
        caller_id="+911140000001",
        whatsapp=True,
    )
    assert body["channel"] == "Whatsapp"
    assert body["call_permission_request"] == "false"  # required for WhatsApp
    assert body["caller_id"] == "+911140000001"
    body = makecall_body(
        k_number=K,
        agent_number=AGENT,
        customer_number=CUSTOMER,
        whatsapp=True,
        call_permission_request=True,
    )
    assert body["call_permission_request"] == "true"


def test_makecall_body_pstn_with_permission_flag_only() -> None:
    body = makecall_body(
        k_number=K, agent_number=AGENT, customer_number=CUSTOMER, call_permission_request=True
    )
    assert "channel" not in body
    assert body["call_permission_request"] == "true"


def test_otpcall_query_is_percent_encoded_in_documented_order() -> None:
    query = otpcall_query(
        ivr_id="1000012345",
        k_number=K,
        customer_number=CUSTOMER,
        whatsapp=True,
        call_permission_request=True,
    )
    assert query == (
        "ivr_id=1000012345&k_number=%2B911140000000&customer_number=%2B919876543210"
        "&channel=Whatsapp&call_permission_request=true"
    )


def test_notifications_filters() -> None:
    assert notifications_filters(None, None) == []
    assert encode_query(notifications_filters(K, False)) == (
        "knowlarity_number=%2B911140000000&enabled=False"
    )
    with pytest.raises(InputError):
        notifications_filters("12345", None)


# --- error mapping ------------------------------------------------------------------------


def test_success_bodies_pass_through() -> None:
    ok = '{"success": {"status": "success", "message": "Call successfully placed"}}'
    assert check_response(200, ok, "success")["success"]["status"] == "success"
    assert check_response(200, '{"message": "Successfully enabled."}', "message") == {
        "message": "Successfully enabled."
    }


@pytest.mark.parametrize(
    ("status", "text", "expect", "message"),
    [
        (
            200,
            '{"error": {"message": "Call Failed! Number 9876543210 in Do Not Call registry."}}',
            "success",
            "Call Failed! Number 9876543210 in Do Not Call registry.",
        ),
        (
            400,
            '{"error": {"message": "Not allowed to send call permission request."}}',
            "success",
            "Not allowed to send call permission request.",
        ),
        (
            401,
            '{"message": "Client name, authorization or knowlarity number is wrong."}',
            "message",
            "Client name, authorization or knowlarity number is wrong.",
        ),
        (
            400,
            '{"error": {"knowlarity_number": "The knowlarity number(+91X) or API key is bad."}}',
            "message",
            "knowlarity_number: The knowlarity number(+91X) or API key is bad.",
        ),
        (
            # The reference's own 401 sample is unterminated JSON.
            401,
            '{\n"message": "Client name,authorization or knowlarity number iswrong.\n}',
            "message",
            "Client name,authorization or knowlarity number iswrong.",
        ),
        (200, '{"error": "Invalid APIKey for this SR number"}', "success", "Invalid APIKey"),
        (200, '{"message": "Agent Number not register with SR account"}', "success", "Agent"),
        (502, "<html>Bad Gateway</html>", "objects", "HTTP 502"),
        (500, "", "objects", "empty body"),
        (200, "not json", "success", "unexpected body"),
    ],
)
def test_every_error_shape_maps_to_one_error(
    status: int, text: str, expect: str, message: str
) -> None:
    with pytest.raises(KnowlarityError) as caught:
        check_response(status, text, expect)  # type: ignore[arg-type]
    assert caught.value.status == status
    assert message in caught.value.message
    assert f"HTTP {status}" in str(caught.value)


# --- paging, backoff, redaction ------------------------------------------------------------


def test_next_page_follows_offset_in_next_path() -> None:
    meta = PageMeta(
        limit=2, offset=0, next="/Basic/v1/account/notifications?limit=2&offset=2&enabled=True"
    )
    assert next_page(meta, {}, 2) == {"limit": "2", "offset": "2"}


def test_next_page_ends_on_null_or_empty() -> None:
    assert next_page(PageMeta(next=None), {}, 20) is None
    assert next_page(PageMeta(next=""), {}, 20) is None
    assert next_page(None, {}, 20) is None


def test_next_page_opaque_cursor_continues_by_offset() -> None:
    meta = PageMeta(limit=10, offset="20", next="forward##6568a839##2023-11-30")
    assert next_page(meta, {"offset": "20"}, 10) == {"offset": "30", "limit": "10"}


def test_next_page_never_targets_another_host() -> None:
    meta = PageMeta(next="https://evil.example/steal?limit=5&offset=5")
    assert next_page(meta, {}, 5) == {"limit": "5", "offset": "5"}  # params only


def test_redact_masks_longest_first() -> None:
    assert redact("k=abc123 and abc", ["abc", "abc123"]) == "k=*** and ***"
