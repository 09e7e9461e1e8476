from datetime import UTC, datetime

import pytest

from shared.events.envelope import (
    CloudEvent,
    event_type,
    nats_subject,
    new_event,
    region_filter,
)


class TestEnvelope:
    def test_an_event_carries_the_cloudevents_attributes_and_extensions(self) -> None:
        event = new_event(
            service="registry",
            aggregate="household",
            name="enrolled",
            subject="h-1",
            region="411302",
            sequence=7,
            data={"a": 1},
            traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        )
        body = event.model_dump(mode="json")
        assert body["specversion"] == "1.0"
        assert body["type"] == "cn.bangfu.registry.household.enrolled.v1"
        assert body["source"] == "/bangfu/registry"
        assert body["subject"] == "h-1"
        assert body["region"] == "411302"
        assert body["sequence"] == 7
        assert body["dataschema"].endswith("/cn.bangfu.registry.household.enrolled.v1.json")
        assert body["traceparent"].startswith("00-aaaa")

    def test_ids_are_uuid7_and_sort_by_creation_time(self) -> None:
        ids = [
            new_event(
                service="registry",
                aggregate="household",
                name="applied",
                subject="h",
                region="411302",
                sequence=1,
                data={},
            ).id
            for _ in range(50)
        ]
        assert all(i[14] == "7" for i in ids)
        assert ids == sorted(ids)

    def test_the_nats_subject_splits_the_region_into_two_digit_tokens(self) -> None:
        event = new_event(
            service="registry",
            aggregate="household",
            name="enrolled",
            subject="h",
            region="411302",
            sequence=1,
            data={},
        )
        assert event.nats_subject == "bangfu.registry.household.enrolled.41.13.02"
        assert nats_subject("benefits", "exit.eligible", "130302") == (
            "bangfu.benefits.exit.eligible.13.03.02"
        )

    def test_a_round_trip_through_json_is_lossless(self) -> None:
        event = new_event(
            service="verification",
            aggregate="verification",
            name="completed",
            subject="v",
            region="410727",
            sequence=2,
            data={"收入": 63000},
            time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        )
        assert CloudEvent.from_json(event.to_json()) == event

    def test_a_bad_region_or_token_is_refused(self) -> None:
        with pytest.raises(ValueError, match="6-digit"):
            nats_subject("registry", "household.applied", "4113")
        with pytest.raises(ValueError, match="lower-case"):
            event_type("registry", "Household", "applied")

    def test_region_filters_select_a_province_city_or_county(self) -> None:
        assert region_filter("41") == "41.*.*"
        assert region_filter("4113") == "41.13.*"
        assert region_filter("411302") == "41.13.02"
        with pytest.raises(ValueError):
            region_filter("413")
