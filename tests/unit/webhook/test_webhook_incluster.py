"""The in-cluster certificate helpers that need no cluster: Secret data and renewal rules."""

from __future__ import annotations

import datetime as dt

from kaito.webhook import certs, incluster

NAMES = certs.service_dns_names("kaito-webhook", "kaito-system")


def test_secret_data_round_trips_and_partial_data_is_no_bundle() -> None:
    bundle = certs.generate(NAMES, ip_addresses=[])
    data = incluster.bundle_to_data(bundle)
    assert set(data) == {"ca.crt", "tls.crt", "tls.key"}
    assert incluster.bundle_from_data(data) == bundle
    assert incluster.bundle_from_data(None) is None
    assert incluster.bundle_from_data({**data, "tls.key": ""}) is None


def test_a_certificate_is_reused_only_when_it_names_the_service_and_is_not_expiring() -> None:
    bundle = certs.generate(NAMES, ip_addresses=[])
    assert incluster.usable(bundle, NAMES)
    assert not incluster.usable(bundle, certs.service_dns_names("other", "kaito-system"))
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=340)
    assert not incluster.usable(bundle, NAMES, now=soon)
    garbage = certs.CertBundle(ca_pem=b"x", cert_pem=b"y", key_pem=b"z")
    assert not incluster.usable(garbage, NAMES)
