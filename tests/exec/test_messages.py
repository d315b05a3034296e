"""FIX messages and protobuf mapping, without I/O: exact decimals, standard tags, validation
against the FIX44.xml data dictionary."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import quickfix as fix

from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.orders.v1 import order_command_pb2 as oc
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from svc_exec.adapters import fix_messages as fm
from svc_exec.adapters.wire import command_from_proto, report_to_proto
from svc_exec.domain.commands import CancelOrder, CommandMeta, NewOrder, Refused, ReplaceOrder
from svc_exec.domain.model import (
    Addressed,
    ExecKind,
    OrdStatus,
    OrdType,
    Report,
    Side,
    TimeInForce,
    VenueIncident,
)
from svc_runtime.fix import data_dictionary, get_text, set_text

META = CommandMeta("cmd_1", "ord_1", "u_1", "req_1")
DICTIONARY = fix.DataDictionary(str(data_dictionary()))


def validated(message: fix.Message, msg_type: str) -> fix.Message:
    """Round-trip through the wire format and validate like a counterparty would."""
    header = message.getHeader()
    for tag, value in (
        (8, "FIX.4.4"),
        (49, "BROKER"),
        (56, "EXCHANGE"),
        (34, "2"),
        (52, "20260102-03:04:05.678"),
    ):
        set_text(header, tag, value)
    raw = message.toString()
    parsed = fix.Message(raw, DICTIONARY, True)
    DICTIONARY.validate(parsed)
    assert parsed.getHeader().getField(35) == msg_type
    return parsed


def test_new_order_single_carries_exact_prices() -> None:
    order = NewOrder(META, "INFY", Side.BUY, OrdType.LIMIT, TimeInForce.IOC, 25, Decimal("1542.35"))
    message = validated(fm.new_order_single("ord_1", order), "D")
    assert get_text(message, 11) == "ord_1"
    assert get_text(message, 1) == "u_1"  # the client code
    assert get_text(message, 44) == "1542.35"
    assert get_text(message, 38) == "25"
    assert (get_text(message, 54), get_text(message, 40), get_text(message, 59)) == ("1", "2", "3")
    stop = NewOrder(
        META, "TCS", Side.SELL, OrdType.STOP_LIMIT, TimeInForce.DAY, 1, Decimal("3999.9"), Decimal("4000")
    )
    message = validated(fm.new_order_single("ord_2", stop), "D")
    assert (get_text(message, 44), get_text(message, 99)) == ("3999.9", "4000")


def test_gtc_and_gtd_orders_carry_their_validity_and_date() -> None:
    gtc = NewOrder(META, "INFY", Side.BUY, OrdType.LIMIT, TimeInForce.GTC, 5, Decimal("1500"))
    message = validated(fm.new_order_single("ord_3", gtc), "D")
    assert (get_text(message, 59), get_text(message, 432)) == ("1", None)
    gtd = NewOrder(
        META,
        "INFY",
        Side.BUY,
        OrdType.LIMIT,
        TimeInForce.GTD,
        5,
        Decimal("1500"),
        expire_date=date(2026, 12, 9),
    )
    message = validated(fm.new_order_single("ord_4", gtd), "D")
    assert (get_text(message, 59), get_text(message, 432)) == ("6", "20261209")
    command = oc.OrderCommand(
        command_id="cmd_9",
        order_id="ord_9",
        user_id="u_1",
        new_order=oc.NewOrderCommand(
            symbol="INFY",
            side=trading_pb2.SIDE_BUY,
            type=trading_pb2.ORDER_TYPE_LIMIT,
            time_in_force=trading_pb2.TIME_IN_FORCE_GTD,
            quantity=5,
            limit_price=decimal_pb2.Decimal(value="1500"),
            expire_date="2026-12-09",
        ),
    )
    parsed = command_from_proto(command)
    assert isinstance(parsed, NewOrder) and parsed.expire_date == date(2026, 12, 9)
    command.new_order.expire_date = ""
    assert isinstance(command_from_proto(command), Refused)  # GTD without its date


def test_iceberg_orders_carry_their_display_quantity_as_max_floor_on_new_and_replace() -> None:
    iceberg = NewOrder(
        META, "INFY", Side.SELL, OrdType.LIMIT, TimeInForce.DAY, 100, Decimal("1500"), display_quantity=10
    )
    message = validated(fm.new_order_single("ord_5", iceberg), "D")
    assert (get_text(message, 38), get_text(message, 111)) == ("100", "10")
    plain = NewOrder(META, "INFY", Side.SELL, OrdType.LIMIT, TimeInForce.DAY, 100, Decimal("1500"))
    assert get_text(validated(fm.new_order_single("ord_6", plain), "D"), 111) is None
    replace = ReplaceOrder(
        META, "INFY", Side.SELL, OrdType.LIMIT, TimeInForce.DAY, 80, Decimal("1500.5"), display_quantity=10
    )
    message = validated(fm.replace_request("ord_5.1", "ord_5", replace), "G")
    assert (get_text(message, 38), get_text(message, 111)) == ("80", "10")


@pytest.mark.parametrize(
    ("kind", "order_type", "display", "accepted"),
    [
        ("new_order", trading_pb2.ORDER_TYPE_LIMIT, 10, True),
        ("replace_order", trading_pb2.ORDER_TYPE_LIMIT, 10, True),
        ("new_order", trading_pb2.ORDER_TYPE_LIMIT, 100, False),  # not below the quantity
        ("new_order", trading_pb2.ORDER_TYPE_LIMIT, -1, False),
        ("new_order", trading_pb2.ORDER_TYPE_STOP, 10, False),  # nothing priced to show
        ("replace_order", trading_pb2.ORDER_TYPE_LIMIT, 150, False),
    ],
)
def test_display_quantity_from_the_wire(kind: str, order_type: int, display: int, accepted: bool) -> None:
    prices = {"limit_price": "1500"} if order_type == trading_pb2.ORDER_TYPE_LIMIT else {"stop_price": "1500"}
    parsed = command_from_proto(
        command(
            kind,
            symbol="INFY",
            side=trading_pb2.SIDE_SELL,
            type=order_type,
            quantity=100,
            display_quantity=display,
            **prices,
        )
    )
    if accepted:
        assert isinstance(parsed, NewOrder | ReplaceOrder) and parsed.display_quantity == display
    else:
        assert isinstance(parsed, Refused) and "display quantity" in parsed.reason


def test_cancel_replace_status_and_mass_status_are_valid_fix44() -> None:
    cancel = CancelOrder(META, "INFY", Side.BUY, 10)
    message = validated(fm.cancel_request("ord_1.1", "ord_1", cancel), "F")
    assert (get_text(message, 11), get_text(message, 41)) == ("ord_1.1", "ord_1")
    replace = ReplaceOrder(META, "INFY", Side.BUY, OrdType.LIMIT, TimeInForce.DAY, 30, Decimal("1500.1"))
    message = validated(fm.replace_request("ord_1.2", "ord_1.1", replace), "G")
    assert (get_text(message, 38), get_text(message, 44)) == ("30", "1500.1")
    message = validated(fm.status_request("ord_1.2", "INFY", Side.BUY, "osr_1"), "H")
    assert get_text(message, 790) == "osr_1"
    message = validated(fm.mass_status_request("msr_1"), "AF")
    assert (get_text(message, 584), get_text(message, 585)) == ("msr_1", "7")


def execution_report_message(**tags: str) -> fix.Message:
    message = fix.Message()
    set_text(message.getHeader(), 35, "8")
    base = {
        37: "X1",
        11: "ord_1",
        17: "E1",
        150: "F",
        39: "1",
        55: "INFY",
        54: "1",
        38: "100",
        32: "40",
        31: "1500.05",
        14: "40",
        151: "60",
        6: "1500.05",
        60: "20260102-03:04:05.678",
    }
    base.update({int(k.lstrip("t")): v for k, v in tags.items()})
    for tag, value in base.items():
        set_text(message, tag, value)
    return message


def test_execution_reports_are_read_exactly() -> None:
    report = fm.execution_report(fm.fields_of(execution_report_message()))
    assert report is not None
    assert report.kind is ExecKind.TRADE and report.status is OrdStatus.PARTIALLY_FILLED
    assert (report.last_qty, report.cum_qty, report.leaves_qty) == (40, 40, 60)
    assert report.last_px == Decimal("1500.05") and report.avg_px == Decimal("1500.05")
    assert report.transact_time is not None and report.transact_time.microsecond == 678000


def test_status_answer_for_an_unknown_order() -> None:
    message = execution_report_message(t150="I", t39="8", t103="5", t790="osr_9", t14="0", t151="0")
    report = fm.execution_report(fm.fields_of(message))
    assert isinstance(report, Report) and report.unknown_order and report.status_request_id == "osr_9"
    assert "103=5" in report.raw  # kept, for the incident if the broker believed it working


def test_a_status_answer_saying_unknown_order_in_words_is_an_unknown_order() -> None:
    message = execution_report_message(t150="I", t39="8", t103="99", t58="Unknown Order", t14="0", t151="0")
    report = fm.execution_report(fm.fields_of(message))
    assert isinstance(report, Report) and report.unknown_order
    other = execution_report_message(
        t150="I", t39="8", t103="99", t58="too late to cancel", t14="0", t151="0"
    )
    assert not fm.execution_report(fm.fields_of(other)).unknown_order  # type: ignore[union-attr]


@pytest.mark.parametrize("tags", [{"t14": "40.5"}, {"t31": "abc"}, {"t39": "Z"}])
def test_malformed_reports_are_refused_naming_the_tag(tags: dict[str, str]) -> None:
    with pytest.raises(fm.MalformedMessage) as caught:
        fm.execution_report(fm.fields_of(execution_report_message(**tags)))
    assert str(caught.value.tag) == next(iter(tags))[1:]


def test_exec_types_the_broker_cannot_map_become_incidents_and_pending_new_is_only_acknowledged() -> None:
    restated = fm.execution_report(fm.fields_of(execution_report_message(t150="D")))
    assert isinstance(restated, VenueIncident)
    assert (restated.kind, restated.reason, restated.cl_ord_id) == ("unmappable", "restated", "ord_1")
    assert "150=D" in restated.raw
    assert fm.execution_report(fm.fields_of(execution_report_message(t150="A", t39="A"))) is None


def command(kind: str, **fields: object) -> oc.OrderCommand:
    message = oc.OrderCommand(command_id="cmd_1", order_id="ord_1", user_id="u_1", request_id="req_1")
    body = getattr(message, kind)
    for name, value in fields.items():
        if name.endswith("price"):
            getattr(body, name).CopyFrom(decimal_pb2.Decimal(value=str(value)))
        else:
            setattr(body, name, value)
    return message


def test_commands_from_the_wire() -> None:
    new = command_from_proto(
        command(
            "new_order",
            symbol="INFY",
            side=trading_pb2.SIDE_BUY,
            type=trading_pb2.ORDER_TYPE_LIMIT,
            quantity=5,
            limit_price="1500.05",
        )
    )
    assert isinstance(new, NewOrder)
    assert new.limit_price == Decimal("1500.05") and new.time_in_force is TimeInForce.DAY
    bad_price = command_from_proto(
        command(
            "new_order",
            symbol="INFY",
            side=trading_pb2.SIDE_BUY,
            type=trading_pb2.ORDER_TYPE_LIMIT,
            quantity=5,
            limit_price="1e3",
        )
    )
    assert isinstance(bad_price, Refused) and "plain decimal" in bad_price.reason
    no_side = command_from_proto(command("cancel_order", symbol="INFY", quantity=5))
    assert isinstance(no_side, Refused) and no_side.kind == "cancel"
    empty = command_from_proto(oc.OrderCommand(command_id="c", order_id="o", user_id="u"))
    assert isinstance(empty, Refused)


def test_report_to_proto_keeps_decimals_and_ids() -> None:
    report = fm.execution_report(fm.fields_of(execution_report_message()))
    assert report is not None
    message = report_to_proto(Addressed(report, "ord_1", "u_1", "req_1"))
    assert message.exec_id == "E1" and message.order_id == "ord_1" and message.user_id == "u_1"
    assert message.exec_type == er.EXEC_TYPE_TRADE
    assert message.last_price.value == "1500.05"
    assert message.cumulative_quantity == 40 and message.request_id == "req_1"
