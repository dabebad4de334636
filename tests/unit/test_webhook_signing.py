"""Webhook signatures as the Standard Webhooks specification computes them, the retry
schedule, and which addresses an endpoint may resolve to."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from core.settings import get_settings
from core.webhook_delivery import MAX_RETRY_DELAY_SECONDS, retry_delay, sign
from core.webhook_urls import is_allowed
from core.webhooks import new_secret


def test_signatures_reproduce_the_specifications_published_vector() -> None:
    # The test vector of the Standard Webhooks reference libraries.
    signature = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}'
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_secrets_are_new_32_byte_keys() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and len(first) == len("whsec_") + 44 and first != second


def test_retries_back_off_four_times_longer_each_time_with_jitter_up_to_six_hours() -> None:
    base = get_settings().webhook_retry_base_seconds  # the tests shorten it
    for failed in range(1, 8):
        expected = min(base * 4 ** (failed - 1), MAX_RETRY_DELAY_SECONDS)
        delays = [retry_delay(failed) for _ in range(200)]
        assert all(0.75 * expected <= d <= 1.25 * expected for d in delays)
        assert len(set(delays)) > 1  # jittered: retries of many deliveries spread out


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",  # the cloud metadata service
        "100.64.0.1",  # shared address space (carrier-grade NAT)
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",  # multicast, which Python calls global
        "192.0.2.1",  # documentation
        "::1",
        "::",
        "fd00::1",  # unique-local
        "fe80::1",  # link-local
        "ff02::1",  # multicast
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:10.0.0.1",
    ],
)
def test_the_services_own_networks_are_refused(address: str) -> None:
    assert not is_allowed(ip_address(address), [])


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_allowed(ip_address(address), [])


def test_allowed_networks_let_exactly_their_addresses_through() -> None:
    allowed = [ip_network("127.0.0.1/32"), ip_network("10.1.0.0/16")]
    assert is_allowed(ip_address("127.0.0.1"), allowed)
    assert is_allowed(ip_address("::ffff:127.0.0.1"), allowed)
    assert is_allowed(ip_address("10.1.200.3"), allowed)
    assert not is_allowed(ip_address("127.0.0.2"), allowed)
    assert not is_allowed(ip_address("10.2.0.1"), allowed)
    assert not is_allowed(ip_address("::1"), allowed)


def test_webhooks_go_to_the_pre_flight_queue_unless_they_have_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import Settings
    from ftsvc.cli import preflight_worker_command

    # The tests give webhooks their own queue: the pre-flight worker consumes both.
    assert preflight_worker_command()[preflight_worker_command().index("-Q") + 1] == "preflight,webhooks"
    monkeypatch.delenv("FTSVC_WEBHOOK_QUEUE")
    assert Settings().webhook_queue == "preflight"
    assert Settings(preflight_queue="cpu").webhook_queue == "cpu"
