"""The webhook destination policy as pure rules: which URLs and addresses it lets through."""

from __future__ import annotations

import ipaddress

import pytest

from services.notifications.domain.destinations import (
    DestinationPolicy,
    DestinationRefused,
    literal_address,
)

PUBLIC = ipaddress.ip_address("203.0.114.10")
LOOPBACK = ipaddress.ip_address("127.0.0.1")
INTERNAL = DestinationPolicy((ipaddress.ip_network("10.20.0.0/16"),))


class TestLiteralAddresses:
    @pytest.mark.parametrize(
        "host", ["127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.1", "127.1", "0x7f000001"]
    )
    def test_every_spelling_of_an_ipv4_address_is_that_address(self, host: str) -> None:
        assert literal_address(host) == LOOPBACK

    def test_an_ipv6_host_in_brackets_and_with_a_zone_is_an_address(self) -> None:
        assert literal_address("[fe80::1%eth0]") == ipaddress.ip_address("fe80::1")

    @pytest.mark.parametrize("host", ["hooks.example.org", "cafe", "deadbeef.cafe", "x1.com"])
    def test_a_name_is_no_address(self, host: str) -> None:
        assert literal_address(host) is None

    def test_a_numeric_host_that_is_no_address_is_refused(self) -> None:
        with pytest.raises(DestinationRefused, match="neither a name nor a valid address"):
            literal_address("1.2.3.4.5")


class TestAllowedNetworks:
    def test_an_allowed_network_lets_its_addresses_through_and_no_others(self) -> None:
        assert INTERNAL.allowed(ipaddress.ip_address("10.20.3.4"))
        assert not INTERNAL.allowed(ipaddress.ip_address("10.21.3.4"))
        assert not INTERNAL.allowed(LOOPBACK)
        assert INTERNAL.allowed(PUBLIC)

    def test_an_ipv6_address_carrying_an_allowed_ipv4_one_is_allowed_too(self) -> None:
        assert INTERNAL.allowed(ipaddress.ip_address("::ffff:10.20.3.4"))
        assert not INTERNAL.allowed(ipaddress.ip_address("::ffff:10.21.3.4"))

    def test_a_6to4_address_is_judged_by_the_ipv4_address_inside(self) -> None:
        assert not DestinationPolicy().allowed(ipaddress.ip_address("2002:a00:5::1"))
        assert DestinationPolicy().allowed(ipaddress.ip_address("2002:cb00:720a::1"))


class TestResolvedNames:
    def test_a_name_passes_only_when_every_address_it_resolves_to_does(self) -> None:
        policy = DestinationPolicy()
        policy.check_resolved("hooks.example.org", [PUBLIC])
        with pytest.raises(DestinationRefused) as refused:
            policy.check_resolved("hooks.example.org", [PUBLIC, LOOPBACK])
        assert "127.0.0.1" not in str(refused.value)

    def test_a_name_that_resolves_to_nothing_is_refused_in_the_same_words(self) -> None:
        policy = DestinationPolicy()
        with pytest.raises(DestinationRefused) as nothing:
            policy.check_resolved("db.internal", [])
        with pytest.raises(DestinationRefused) as private:
            policy.check_resolved("db.internal", [ipaddress.ip_address("10.0.0.5")])
        assert str(nothing.value) == str(private.value)


class TestUrls:
    @pytest.mark.parametrize("port", [80, 443, 1024, 8443, 65535])
    def test_web_ports_and_unprivileged_ports_are_accepted(self, port: int) -> None:
        DestinationPolicy().check_url(f"https://hooks.example.org:{port}/")

    @pytest.mark.parametrize("port", [1, 22, 25, 389, 1023])
    def test_other_privileged_ports_are_refused(self, port: int) -> None:
        with pytest.raises(DestinationRefused, match=f"port {port}"):
            DestinationPolicy().check_url(f"https://hooks.example.org:{port}/")

    def test_a_url_without_a_host_is_refused(self) -> None:
        with pytest.raises(DestinationRefused, match="no host"):
            DestinationPolicy().check_url("https:///hook")
