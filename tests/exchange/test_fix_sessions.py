"""The FIX session layer of the exchange: logon, sequence gaps filled by resends, sequence
numbers that survive restarts (the exchange's and the counterparty's), PossDup and
duplicate ClOrdIDs. Real quickfix on both sides, the exchange as its own process."""

from __future__ import annotations

from pathlib import Path

import quickfix as fix

from brokermesh.exchange.v1 import exchange_admin_pb2 as pb
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from tests.exchange import fix_messages as fm
from tests.exchange.fix_client import FixClient, wait_until


def session(sessions: pb.ListSessionsResponse, counterparty: str) -> pb.FixSession:
    return next(s for s in sessions.sessions if s.counterparty == counterparty)


async def sell_into(admin, symbol: str, quantity: int, price: str) -> pb.ExchangeOrder:
    return await admin.PlaceOrder(
        pb.PlaceOrderRequest(
            symbol=symbol,
            side=trading_pb2.SIDE_SELL,
            quantity=quantity,
            order_type=trading_pb2.ORDER_TYPE_LIMIT,
            price=decimal_pb2.Decimal(value=price),
        )
    )


async def test_logon_is_visible_with_sequence_numbers(exchange, admin, fix_clients):
    before = session(await admin.ListSessions(pb.ListSessionsRequest()), "BROKER")
    assert not before.logged_on
    assert before.session_id == "FIX.4.4:EXCHANGE->BROKER"
    client = await fix_clients(exchange)
    cl = fm.new_order(client, "INFY", "1", "1", price="1500.00")
    await client.wait_for(lambda r: r.get(11) == cl)
    after = session(await admin.ListSessions(pb.ListSessionsRequest()), "BROKER")
    assert after.logged_on
    assert after.next_target_seq_num == client.session().getExpectedSenderNum()
    assert after.next_sender_seq_num == client.session().getExpectedTargetNum()


async def test_reports_made_while_the_counterparty_is_away_are_resent_on_logon(
    exchange, admin, fix_clients, tmp_path
):
    work = tmp_path / "broker"
    client = await fix_clients(exchange, work_dir=work)
    cl = fm.new_order(client, "INFY", "1", "10", price="1500.00")
    await client.wait_for(lambda r: r.get(11) == cl and r[150] == "0")
    client.stop()
    await wait_until(lambda: not client.logged_on)

    # Filled while the broker is logged out: the exchange stores the report under the next
    # sequence number and cannot send it.
    await sell_into(admin, "INFY", 10, "1500.00")
    away = session(await admin.ListSessions(pb.ListSessionsRequest()), "BROKER")
    assert not away.logged_on

    # Same FileStore: the broker logs on expecting the old number, sees a gap, asks for a
    # resend, and gets the fill marked PossDup.
    again = await fix_clients(exchange, work_dir=work)
    fill = await again.wait_for(lambda r: r.get(11) == cl and r[150] == "F", what="resent fill")
    assert fill.get(43) == "Y" and fill.get(122)
    assert (fill[32], fill[31], fill[39]) == ("10", "1500.00", "2")
    assert len([r for r in again.messages("8") if r.get(11) == cl and r[150] == "F"]) == 1
    orders = (await admin.ListExchangeOrders(pb.ListExchangeOrdersRequest(sender_comp_id="BROKER"))).orders
    assert [(o.cl_ord_id, o.filled_quantity, o.ord_status) for o in orders] == [(cl, 10, "2")]


async def test_a_dropped_connection_recovers_its_messages(exchange, admin, fix_clients):
    client = await fix_clients(exchange)
    cl = fm.new_order(client, "TCS", "1", "5", price="3890.00")
    await client.wait_for(lambda r: r.get(11) == cl and r[150] == "0")
    logons = client.logons
    await admin.SetScenario(pb.SetScenarioRequest(drop_session="BROKER"))
    await wait_until(lambda: client.logons > logons, 30, "the client never logged on again")
    # Trading continues across the drop; nothing is lost or doubled.
    await sell_into(admin, "TCS", 5, "3890.00")
    fill = await client.wait_for(lambda r: r.get(11) == cl and r[150] == "F")
    assert fill[39] == "2"
    assert len([r for r in client.messages("8") if r[17] == fill[17]]) == 1


async def test_exchange_restart_keeps_sequence_numbers_and_the_books(exchange, admin, fix_clients):
    """kill -9 of the exchange with resting orders: after the restart they still work, can be
    cancelled, filled and triggered, status answers agree with what was reported before, a
    resend of an old ClOrdID is still recognised, and no ExecID or OrderID repeats."""
    client = await fix_clients(exchange)
    resting = fm.new_order(client, "INFY", "1", "10", price="1500.00")
    partial = fm.new_order(client, "TCS", "2", "10", price="3900.00")
    stop = fm.new_order(client, "INFY", "2", "5", order_type="3", stop_price="1450.00")
    done = fm.new_order(client, "INFY", "1", "4", price="1490.00")
    for cl in (resting, partial, stop, done):
        await client.wait_for(lambda r, cl=cl: r.get(11) == cl and r[150] == "0")
    await admin.PlaceOrder(participant_order("P1", "TCS", trading_pb2.SIDE_BUY, 4, "3900.00"))
    await client.wait_for(lambda r: r.get(11) == partial and r[150] == "F")
    fm.cancel(client, done, "INFY", "1")
    await client.wait_for(lambda r: r.get(41) == done and r[150] == "4")
    before = await admin.ListExchangeOrders(pb.ListExchangeOrdersRequest(sender_comp_id="BROKER"))
    sent_before = client.session().getExpectedTargetNum()
    logons = client.logons

    await exchange.kill("exchange_sim")  # kill -9: nothing flushed on the way out
    await exchange.start_service("exchange_sim")
    await wait_until(lambda: client.logons > logons and client.logged_on, 30, "no logon after the restart")

    # No sequence reset: the exchange continues its numbering from its FileStore.
    assert not [a for a in client.admin if a.msg_type == "4" and a.get(123) != "Y"]
    assert client.session().getExpectedTargetNum() >= sent_before
    # The exchange's view of every order is what it was.
    after = await admin.ListExchangeOrders(
        pb.ListExchangeOrdersRequest(sender_comp_id="BROKER"), wait_for_ready=True, timeout=30
    )
    assert [_view(o) for o in after.orders] == [_view(o) for o in before.orders]
    assert after.answers_since.ToSeconds() <= before.answers_since.ToSeconds()
    book = await admin.GetOrderBook(pb.GetOrderBookRequest(symbol="INFY", depth=5))
    assert [(str(level.price.value), level.quantity) for level in book.bids] == [("1500.00", 10)]
    # Status answers agree with the reports sent before the crash.
    expected = {
        resting: ("0", "0", "10"),
        partial: ("1", "4", "6"),
        stop: ("0", "0", "5"),
        done: ("4", "0", "0"),
    }
    order_ids = {cl: (await client.wait_for(lambda r, cl=cl: r.get(11) == cl))[37] for cl in expected}
    for n, (cl, (status, cum, leaves)) in enumerate(expected.items()):
        client.send_raw([(11, cl), (55, "INFY"), (54, "1"), (790, f"after-{n}")], "H")
        answer = await client.wait_for(lambda r, n=n: r.get(790) == f"after-{n}")
        assert (answer[150], answer[39], answer[14], answer[151], answer[37]) == (
            "I", status, cum, leaves, order_ids[cl],
        )  # fmt: skip
    # A resend of an old ClOrdID with the same content is answered, not taken as a new order.
    fm.new_order(client, "INFY", "1", "10", price="1500.00", cl_ord_id=resting)
    await client.wait_for(lambda r: r.get(11) == resting and r[150] == "I" and r.get(790) is None)

    # The orders work: cancel one, fill another, trigger the stop.
    cancel = fm.cancel(client, resting, "INFY", "1")
    cancelled = await client.wait_for(lambda r: r.get(11) == cancel and r[150] == "4")
    assert cancelled[37] == order_ids[resting]
    await admin.PlaceOrder(participant_order("P1", "TCS", trading_pb2.SIDE_BUY, 6, "3900.00"))
    filled = await client.wait_for(lambda r: r.get(11) == partial and r[150] == "F" and r[39] == "2")
    assert (filled[14], filled[151], filled[37]) == ("10", "0", order_ids[partial])
    await admin.PlaceOrder(participant_order("P1", "INFY", trading_pb2.SIDE_BUY, 1, "1450.00"))
    await admin.PlaceOrder(participant_order("P2", "INFY", trading_pb2.SIDE_SELL, 1, "1450.00"))
    triggered = await client.wait_for(lambda r: r.get(11) == stop and r[150] == "D")
    assert (triggered[378], triggered[37]) == ("8", order_ids[stop])
    # Ids never repeat across the restart.
    exec_ids = [r[17] for r in client.messages("8")]
    assert len(exec_ids) == len(set(exec_ids))
    fresh = fm.new_order(client, "INFY", "1", "1", price="1400.00")
    ack = await client.wait_for(lambda r: r.get(11) == fresh and r[150] == "0")
    assert ack[37] not in order_ids.values()


def participant_order(
    participant: str, symbol: str, side: int, quantity: int, price: str
) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(
        participant=participant,
        symbol=symbol,
        side=side,
        quantity=quantity,
        order_type=trading_pb2.ORDER_TYPE_LIMIT,
        price=decimal_pb2.Decimal(value=price),
    )


def _view(order: pb.ExchangeOrder) -> tuple[object, ...]:
    return (
        order.exchange_order_id,
        order.cl_ord_id,
        order.ord_status,
        order.quantity,
        order.filled_quantity,
        order.leaves_quantity,
        order.average_price.value,
        order.price.value,
        order.stop_price.value,
    )


async def test_counterparty_restart_with_persisted_sequence_numbers(
    exchange, admin, fix_clients, tmp_path: Path
):
    work = tmp_path / "broker"
    client = await fix_clients(exchange, work_dir=work)
    for _ in range(3):
        cl = fm.new_order(client, "INFY", "1", "1", price="1500.00")
        await client.wait_for(lambda r, cl=cl: r.get(11) == cl)
    next_out = client.session().getExpectedSenderNum()
    client.stop()
    again = await fix_clients(exchange, work_dir=work)
    assert again.session().getExpectedSenderNum() >= next_out
    state = session(await admin.ListSessions(pb.ListSessionsRequest()), "BROKER")
    assert state.logged_on and state.next_target_seq_num >= next_out


def _resend(client: FixClient, fields: list[tuple[int, str]], msg_type: str) -> None:
    """A message marked as possibly sent before (PossDup=Y with OrigSendingTime)."""
    message = fix.Message()
    message.getHeader().setField(fix.MsgType(msg_type))
    message.getHeader().setField(fix.StringField(43, "Y"))
    message.getHeader().setField(fix.StringField(122, "20200101-00:00:00.000"))
    for tag, value in fields:
        message.setField(fix.StringField(tag, value))
    client.send(message)


async def test_possdup_and_repeated_clordids_never_make_a_second_order(exchange, admin, fix_clients):
    client = await fix_clients(exchange)
    fields = [
        (11, "dup-1"),
        (55, "INFY"),
        (54, "1"),
        (38, "10"),
        (40, "2"),
        (44, "1500.00"),
        (59, "0"),
        (60, fm.TRANSACT_TIME),
    ]
    client.send_raw(fields, "D")
    await client.wait_for(lambda r: r.get(11) == "dup-1" and r[150] == "0")

    _resend(client, fields, "D")  # PossDup resend of what was processed
    client.send_raw(fields, "D")  # the same request again, e.g. after a crash
    await wait_until(
        lambda: len([r for r in client.messages("8") if r.get(11) == "dup-1" and r[150] == "I"]) >= 2
    )
    statuses = [r for r in client.messages("8") if r.get(11) == "dup-1" and r[150] == "I"]
    assert all(s[39] == "0" and s[151] == "10" for s in statuses)

    clash = [(tag, "20" if tag == 38 else value) for tag, value in fields]
    client.send_raw(clash, "D")  # same ClOrdID, different order: refused
    reject = await client.wait_for(lambda r: r.get(11) == "dup-1" and r[150] == "8")
    assert (reject[103], reject[37]) == ("6", "NONE")

    # A PossDup for a ClOrdID never seen is a new order (it was lost on the way).
    _resend(
        client, [(11 if tag == 11 else tag, "dup-2" if tag == 11 else value) for tag, value in fields], "D"
    )
    await client.wait_for(lambda r: r.get(11) == "dup-2" and r[150] == "0")

    orders = (await admin.ListExchangeOrders(pb.ListExchangeOrdersRequest())).orders
    assert sorted(o.cl_ord_id for o in orders) == ["dup-1", "dup-2"]
    book = await admin.GetOrderBook(pb.GetOrderBookRequest(symbol="INFY"))
    assert [(lvl.price.value, lvl.quantity, lvl.order_count) for lvl in book.bids] == [("1500.00", 20, 2)]


async def test_unsupported_and_malformed_messages_are_refused_at_the_right_layer(exchange, fix_clients):
    client = await fix_clients(exchange)
    # A valid FIX message the order-entry session does not take: BusinessMessageReject.
    request = fix.Message()
    request.getHeader().setField(fix.MsgType("V"))
    for tag, value in ((262, "m1"), (263, "0"), (264, "1")):
        request.setField(fix.StringField(tag, value))
    entry_type, related = fix.Group(267, 269), fix.Group(146, 55)
    entry_type.setField(fix.StringField(269, "0"))
    related.setField(fix.StringField(55, "INFY"))
    request.addGroup(entry_type)
    request.addGroup(related)
    client.send(request)
    await wait_until(lambda: any(r.msg_type == "j" for r in client.messages()), 20, "no business reject")
    reject = next(r for r in client.messages() if r.msg_type == "j")
    assert (reject[372], reject[380]) == ("V", "3")
    # A message missing a required field: a session-level Reject from quickfix.
    client.send_raw(
        [(11, "bad"), (55, "INFY"), (38, "10"), (40, "2"), (60, fm.TRANSACT_TIME)], "D"
    )  # no Side
    await wait_until(lambda: any(a.msg_type == "3" for a in client.admin), 20, "no session reject")
    assert next(a for a in client.admin if a.msg_type == "3")[371] == "54"
    assert not [r for r in client.messages("8") if r.get(11) == "bad"]
