"""Pure runtime pieces: ids, decimals, error details, topology names."""

from __future__ import annotations

from decimal import Decimal

import grpc
import pytest

from svc_runtime import decimals, ids
from svc_runtime.errors import FailedPrecondition, InvalidArgument, to_rpc_status
from svc_runtime.messaging import Topology


def test_ids_are_prefixed_unique_and_time_ordered() -> None:
    made = [ids.new_id("ord") for _ in range(2000)]
    assert len(set(made)) == len(made)
    assert all(m.startswith("ord_") and len(m) == 30 for m in made)
    assert made[0][:14] <= made[-1][:14]  # the time part never goes backwards


@pytest.mark.parametrize(
    ("text", "places", "expected"),
    [("1542.35", 2, Decimal("1542.35")), ("0.05", 2, Decimal("0.05")), ("100000", 2, Decimal(100000))],
)
def test_parse_decimal_accepts_plain_numbers(text: str, places: int, expected: Decimal) -> None:
    assert decimals.parse_decimal(text, field="amount", max_places=places) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1e5", "INVALID_DECIMAL"),
        ("NaN", "INVALID_DECIMAL"),
        ("1,000", "INVALID_DECIMAL"),
        ("", "INVALID_DECIMAL"),
        ("10.001", "TOO_PRECISE"),
        ("-5", "NOT_POSITIVE"),
        ("0", "NOT_POSITIVE"),
    ],
)
def test_parse_decimal_rejects_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decimals.parse_decimal(text, field="amount", max_places=2, positive=True)
    assert caught.value.reason == reason
    assert caught.value.violations[0].field == "amount"


def test_trailing_zeros_do_not_count_as_precision() -> None:
    assert decimals.parse_decimal("10.500", field="p", max_places=2) == Decimal("10.5")


def test_money_rounding() -> None:
    assert decimals.round_money(Decimal("1.005")) == Decimal("1.01")
    assert decimals.round_money_up(Decimal("1.001")) == Decimal("1.01")
    assert decimals.format_decimal(Decimal("1E+2")) == "100"


def test_service_errors_carry_error_info_and_field_violations() -> None:
    from google.rpc import error_details_pb2

    status = to_rpc_status(
        FailedPrecondition("not enough cash", reason="INSUFFICIENT_FUNDS", metadata={"available": "100.00"})
    )
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION
    assert status.details == "not enough cash"
    bad = to_rpc_status(InvalidArgument("amount has more than 2 fraction digits", field="amount"))
    metadata = dict(bad.trailing_metadata)
    from google.rpc import status_pb2

    decoded = status_pb2.Status.FromString(metadata["grpc-status-details-bin"])
    kinds = {d.TypeName() for d in decoded.details}
    assert kinds == {
        error_details_pb2.ErrorInfo.DESCRIPTOR.full_name,
        error_details_pb2.BadRequest.DESCRIPTOR.full_name,
    }


def test_topology_namespaces_every_name() -> None:
    a, b = Topology("a"), Topology("b")
    assert a.order_commands_stream != b.order_commands_stream
    assert a.exec_report_subject("u_1") == "a.exec.report.u_1"
    assert {s.name for s in a.streams()} == {"A_ORDER_COMMANDS", "A_EXEC_REPORTS"}
    for stream in a.streams():
        assert all(subject.startswith("a.") for subject in stream.subjects)


def test_order_events_are_live_only_and_report_batches_are_stored() -> None:
    topology = Topology("a")
    assert topology.stored(topology.order_command_subject("new"))
    assert topology.stored(topology.exec_report_subject("u_1"))
    assert topology.stored(topology.exec_report_batch_subject)
    # The stream replays from PostgreSQL; no JetStream stream keeps order events.
    assert not topology.stored(topology.order_event_subject("u_1"))
    assert not topology.stored(topology.previous_order_event_subject("u_1"))


def test_a_request_id_offered_in_metadata_is_kept_only_if_safe() -> None:
    from svc_runtime import context

    assert context.from_metadata((("x-request-id", "req-42:a.b"),)).request_id == "req-42:a.b"
    for unsafe in ("has space", "x" * 129, "", "tab\there"):
        made = context.from_metadata((("x-request-id", unsafe),)).request_id
        assert made != unsafe and made.startswith("req")
