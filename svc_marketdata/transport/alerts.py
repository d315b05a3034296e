"""gRPC `AlertService`: resource names and messages ↔ the price-alert use cases."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from brokermesh.marketdata.v1 import alerts_pb2, alerts_pb2_grpc
from brokermesh.type.v1 import decimal_pb2
from svc_marketdata.app.alerts import PriceAlerts
from svc_marketdata.domain.alerts import Alert, Condition
from svc_marketdata.domain.watchlists import check_user_id
from svc_marketdata.transport.watchlists import parse_parent
from svc_runtime.decimals import format_decimal, parse_decimal
from svc_runtime.errors import InvalidArgument

SERVICE_NAME = alerts_pb2.DESCRIPTOR.services_by_name["AlertService"].full_name

_CONDITIONS = {
    alerts_pb2.ALERT_CONDITION_PRICE_ABOVE: Condition.PRICE_ABOVE,
    alerts_pb2.ALERT_CONDITION_PRICE_BELOW: Condition.PRICE_BELOW,
    alerts_pb2.ALERT_CONDITION_CHANGE_PERCENT_ABOVE: Condition.CHANGE_PERCENT_ABOVE,
    alerts_pb2.ALERT_CONDITION_CHANGE_PERCENT_BELOW: Condition.CHANGE_PERCENT_BELOW,
}
_CONDITION_NUMBERS = {v: k for k, v in _CONDITIONS.items()}
_ALERT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STATES = {"ACTIVE": alerts_pb2.ALERT_STATE_ACTIVE, "FIRED": alerts_pb2.ALERT_STATE_FIRED}


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _dec(value: Decimal | None) -> decimal_pb2.Decimal | None:
    return None if value is None else decimal_pb2.Decimal(value=format_decimal(value))


def alert_message(alert: Alert) -> alerts_pb2.Alert:
    return alerts_pb2.Alert(
        name=f"users/{alert.user_id}/alerts/{alert.alert_id}",
        alert_id=alert.alert_id,
        symbol=alert.symbol,
        condition=_CONDITION_NUMBERS[alert.condition],
        threshold=_dec(alert.threshold),
        state=_STATES[alert.state.value],
        create_time=_timestamp(alert.create_time),
        fire_time=_timestamp(alert.fire_time),
        fired_price=_dec(alert.fired_price),
        note=alert.note,
    )


def parse_alert_name(name: str) -> tuple[str, str]:
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "users" or parts[2] != "alerts" or not _ALERT_ID.match(parts[3]):
        raise InvalidArgument("name must be users/{user}/alerts/{alert}", reason="INVALID_NAME", field="name")
    return check_user_id(parts[1], field_name="name"), parts[3]


class AlertServicer(alerts_pb2_grpc.AlertServiceServicer):
    def __init__(self, alerts: PriceAlerts) -> None:
        self.alerts = alerts

    async def CreateAlert(
        self, request: alerts_pb2.CreateAlertRequest, context: grpc.aio.ServicerContext
    ) -> alerts_pb2.Alert:
        user_id = parse_parent(request.parent)
        given = request.alert
        condition = _CONDITIONS.get(given.condition)
        if condition is None:
            raise InvalidArgument(
                "alert.condition is required", reason="INVALID_ENUM", field="alert.condition"
            )
        if not given.HasField("threshold"):
            raise InvalidArgument("alert.threshold is required", field="alert.threshold")
        threshold = parse_decimal(given.threshold.value, field="alert.threshold", max_places=2)
        created = await self.alerts.create(
            user_id,
            symbol=given.symbol.strip().upper(),
            condition=condition,
            threshold=threshold,
            note=given.note,
            request_id=request.request_id,
        )
        return alert_message(created)

    async def ListAlerts(
        self, request: alerts_pb2.ListAlertsRequest, context: grpc.aio.ServicerContext
    ) -> alerts_pb2.ListAlertsResponse:
        user_id = parse_parent(request.parent)
        return alerts_pb2.ListAlertsResponse(
            alerts=[alert_message(a) for a in await self.alerts.of_user(user_id)]
        )

    async def DeleteAlert(
        self, request: alerts_pb2.DeleteAlertRequest, context: grpc.aio.ServicerContext
    ) -> alerts_pb2.DeleteAlertResponse:
        user_id, alert_id = parse_alert_name(request.name)
        await self.alerts.delete(user_id, alert_id)
        return alerts_pb2.DeleteAlertResponse()

    async def StreamAlertEvents(
        self, request: alerts_pb2.StreamAlertEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[alerts_pb2.AlertEvent]:
        user_id = parse_parent(request.parent)
        after: int | None = None
        if request.after_event_id:
            if not request.after_event_id.isdigit() or len(request.after_event_id) > 18:
                raise InvalidArgument("after_event_id is not an event id", field="after_event_id")
            after = int(request.after_event_id)
        async for record in self.alerts.follow(user_id, after):
            yield alerts_pb2.AlertEvent(event_id=str(record.event_id), alert=alert_message(record.alert))
