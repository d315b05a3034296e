import datetime

from brokermesh.type.v1 import charges_pb2 as _charges_pb2
from brokermesh.type.v1 import decimal_pb2 as _decimal_pb2
from brokermesh.type.v1 import invariants_pb2 as _invariants_pb2
from brokermesh.type.v1 import status_pb2 as _status_pb2
from brokermesh.type.v1 import trading_pb2 as _trading_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GttDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GTT_DIRECTION_UNSPECIFIED: _ClassVar[GttDirection]
    GTT_DIRECTION_RISES_TO: _ClassVar[GttDirection]
    GTT_DIRECTION_FALLS_TO: _ClassVar[GttDirection]

class GttStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GTT_STATUS_UNSPECIFIED: _ClassVar[GttStatus]
    GTT_STATUS_ACTIVE: _ClassVar[GttStatus]
    GTT_STATUS_TRIGGERED: _ClassVar[GttStatus]
    GTT_STATUS_FAILED: _ClassVar[GttStatus]
    GTT_STATUS_CANCELLED: _ClassVar[GttStatus]
    GTT_STATUS_EXPIRED: _ClassVar[GttStatus]

class OrderStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_STATUS_UNSPECIFIED: _ClassVar[OrderStatus]
    ORDER_STATUS_PENDING_EXCHANGE: _ClassVar[OrderStatus]
    ORDER_STATUS_OPEN: _ClassVar[OrderStatus]
    ORDER_STATUS_PARTIALLY_FILLED: _ClassVar[OrderStatus]
    ORDER_STATUS_FILLED: _ClassVar[OrderStatus]
    ORDER_STATUS_CANCELLED: _ClassVar[OrderStatus]
    ORDER_STATUS_REJECTED: _ClassVar[OrderStatus]
    ORDER_STATUS_EXPIRED: _ClassVar[OrderStatus]
    ORDER_STATUS_PENDING_CANCEL: _ClassVar[OrderStatus]
    ORDER_STATUS_PENDING_REPLACE: _ClassVar[OrderStatus]
    ORDER_STATUS_TRIGGER_PENDING: _ClassVar[OrderStatus]

class ContingencyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTINGENCY_KIND_UNSPECIFIED: _ClassVar[ContingencyKind]
    CONTINGENCY_KIND_BRACKET: _ClassVar[ContingencyKind]
    CONTINGENCY_KIND_OCO: _ClassVar[ContingencyKind]

class Leg(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEG_UNSPECIFIED: _ClassVar[Leg]
    LEG_SINGLE: _ClassVar[Leg]
    LEG_ENTRY: _ClassVar[Leg]
    LEG_TARGET: _ClassVar[Leg]
    LEG_STOP_LOSS: _ClassVar[Leg]

class OrderEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_EVENT_TYPE_UNSPECIFIED: _ClassVar[OrderEventType]
    ORDER_EVENT_TYPE_ACCEPTED: _ClassVar[OrderEventType]
    ORDER_EVENT_TYPE_OPENED: _ClassVar[OrderEventType]
    ORDER_EVENT_TYPE_FILLED: _ClassVar[OrderEventType]
    ORDER_EVENT_TYPE_CANCEL_REQUESTED: _ClassVar[OrderEventType]
    ORDER_EVENT_TYPE_CANCELLED: _ClassVar[OrderEventType]
    ORDER_EVENT_TYPE_MODIFY_REQUESTED: _ClassVar[OrderEventType]
    ORDER_EVENT_TYPE_MODIFIED: _ClassVar[OrderEventType]
    ORDER_EVENT_TYPE_REJECTED: _ClassVar[OrderEventType]
    ORDER_EVENT_TYPE_AMEND_REJECTED: _ClassVar[OrderEventType]
    ORDER_EVENT_TYPE_EXPIRED: _ClassVar[OrderEventType]
    ORDER_EVENT_TYPE_TRIGGERED: _ClassVar[OrderEventType]
    ORDER_EVENT_TYPE_NEEDS_ATTENTION: _ClassVar[OrderEventType]
GTT_DIRECTION_UNSPECIFIED: GttDirection
GTT_DIRECTION_RISES_TO: GttDirection
GTT_DIRECTION_FALLS_TO: GttDirection
GTT_STATUS_UNSPECIFIED: GttStatus
GTT_STATUS_ACTIVE: GttStatus
GTT_STATUS_TRIGGERED: GttStatus
GTT_STATUS_FAILED: GttStatus
GTT_STATUS_CANCELLED: GttStatus
GTT_STATUS_EXPIRED: GttStatus
ORDER_STATUS_UNSPECIFIED: OrderStatus
ORDER_STATUS_PENDING_EXCHANGE: OrderStatus
ORDER_STATUS_OPEN: OrderStatus
ORDER_STATUS_PARTIALLY_FILLED: OrderStatus
ORDER_STATUS_FILLED: OrderStatus
ORDER_STATUS_CANCELLED: OrderStatus
ORDER_STATUS_REJECTED: OrderStatus
ORDER_STATUS_EXPIRED: OrderStatus
ORDER_STATUS_PENDING_CANCEL: OrderStatus
ORDER_STATUS_PENDING_REPLACE: OrderStatus
ORDER_STATUS_TRIGGER_PENDING: OrderStatus
CONTINGENCY_KIND_UNSPECIFIED: ContingencyKind
CONTINGENCY_KIND_BRACKET: ContingencyKind
CONTINGENCY_KIND_OCO: ContingencyKind
LEG_UNSPECIFIED: Leg
LEG_SINGLE: Leg
LEG_ENTRY: Leg
LEG_TARGET: Leg
LEG_STOP_LOSS: Leg
ORDER_EVENT_TYPE_UNSPECIFIED: OrderEventType
ORDER_EVENT_TYPE_ACCEPTED: OrderEventType
ORDER_EVENT_TYPE_OPENED: OrderEventType
ORDER_EVENT_TYPE_FILLED: OrderEventType
ORDER_EVENT_TYPE_CANCEL_REQUESTED: OrderEventType
ORDER_EVENT_TYPE_CANCELLED: OrderEventType
ORDER_EVENT_TYPE_MODIFY_REQUESTED: OrderEventType
ORDER_EVENT_TYPE_MODIFIED: OrderEventType
ORDER_EVENT_TYPE_REJECTED: OrderEventType
ORDER_EVENT_TYPE_AMEND_REJECTED: OrderEventType
ORDER_EVENT_TYPE_EXPIRED: OrderEventType
ORDER_EVENT_TYPE_TRIGGERED: OrderEventType
ORDER_EVENT_TYPE_NEEDS_ATTENTION: OrderEventType

class Gtt(_message.Message):
    __slots__ = ("name", "gtt_id", "user_id", "trigger_price", "direction", "order", "status", "order_id", "status_reason", "create_time", "expire_time", "trigger_time", "triggered_at_price")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GTT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_PRICE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_TIME_FIELD_NUMBER: _ClassVar[int]
    TRIGGERED_AT_PRICE_FIELD_NUMBER: _ClassVar[int]
    name: str
    gtt_id: str
    user_id: str
    trigger_price: _decimal_pb2.Decimal
    direction: GttDirection
    order: Order
    status: GttStatus
    order_id: str
    status_reason: str
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    trigger_time: _timestamp_pb2.Timestamp
    triggered_at_price: _decimal_pb2.Decimal
    def __init__(self, name: _Optional[str] = ..., gtt_id: _Optional[str] = ..., user_id: _Optional[str] = ..., trigger_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., direction: _Optional[_Union[GttDirection, str]] = ..., order: _Optional[_Union[Order, _Mapping]] = ..., status: _Optional[_Union[GttStatus, str]] = ..., order_id: _Optional[str] = ..., status_reason: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trigger_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., triggered_at_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ...) -> None: ...

class CreateGttRequest(_message.Message):
    __slots__ = ("parent", "gtt", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    GTT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    gtt: Gtt
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., gtt: _Optional[_Union[Gtt, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetGttRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListGttsRequest(_message.Message):
    __slots__ = ("parent",)
    PARENT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    def __init__(self, parent: _Optional[str] = ...) -> None: ...

class ListGttsResponse(_message.Message):
    __slots__ = ("gtts",)
    GTTS_FIELD_NUMBER: _ClassVar[int]
    gtts: _containers.RepeatedCompositeFieldContainer[Gtt]
    def __init__(self, gtts: _Optional[_Iterable[_Union[Gtt, _Mapping]]] = ...) -> None: ...

class CancelGttRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CheckInvariantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckInvariantsResponse(_message.Message):
    __slots__ = ("violations", "orders_checked")
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    ORDERS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    violations: _containers.RepeatedCompositeFieldContainer[_invariants_pb2.InvariantViolation]
    orders_checked: int
    def __init__(self, violations: _Optional[_Iterable[_Union[_invariants_pb2.InvariantViolation, _Mapping]]] = ..., orders_checked: _Optional[int] = ...) -> None: ...

class Order(_message.Message):
    __slots__ = ("name", "order_id", "user_id", "client_order_id", "symbol", "side", "type", "time_in_force", "product", "quantity", "limit_price", "stop_price", "status", "filled_quantity", "leaves_quantity", "average_price", "status_reason", "version", "create_time", "update_time", "exchange_order_id", "protection_price", "expire_date", "tag", "contingent", "leg", "parent_order_id", "oco_group_id", "trailing_stop", "display_quantity")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TIME_IN_FORCE_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    STOP_PRICE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FILLED_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    LEAVES_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_PRICE_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_PRICE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_DATE_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    CONTINGENT_FIELD_NUMBER: _ClassVar[int]
    LEG_FIELD_NUMBER: _ClassVar[int]
    PARENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    OCO_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TRAILING_STOP_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    order_id: str
    user_id: str
    client_order_id: str
    symbol: str
    side: _trading_pb2.Side
    type: _trading_pb2.OrderType
    time_in_force: _trading_pb2.TimeInForce
    product: _trading_pb2.Product
    quantity: int
    limit_price: _decimal_pb2.Decimal
    stop_price: _decimal_pb2.Decimal
    status: OrderStatus
    filled_quantity: int
    leaves_quantity: int
    average_price: _decimal_pb2.Decimal
    status_reason: str
    version: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    exchange_order_id: str
    protection_price: _decimal_pb2.Decimal
    expire_date: str
    tag: str
    contingent: ContingentTerms
    leg: Leg
    parent_order_id: str
    oco_group_id: str
    trailing_stop: TrailingStop
    display_quantity: int
    def __init__(self, name: _Optional[str] = ..., order_id: _Optional[str] = ..., user_id: _Optional[str] = ..., client_order_id: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[_trading_pb2.Side, str]] = ..., type: _Optional[_Union[_trading_pb2.OrderType, str]] = ..., time_in_force: _Optional[_Union[_trading_pb2.TimeInForce, str]] = ..., product: _Optional[_Union[_trading_pb2.Product, str]] = ..., quantity: _Optional[int] = ..., limit_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., stop_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., status: _Optional[_Union[OrderStatus, str]] = ..., filled_quantity: _Optional[int] = ..., leaves_quantity: _Optional[int] = ..., average_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., status_reason: _Optional[str] = ..., version: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exchange_order_id: _Optional[str] = ..., protection_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., expire_date: _Optional[str] = ..., tag: _Optional[str] = ..., contingent: _Optional[_Union[ContingentTerms, _Mapping]] = ..., leg: _Optional[_Union[Leg, str]] = ..., parent_order_id: _Optional[str] = ..., oco_group_id: _Optional[str] = ..., trailing_stop: _Optional[_Union[TrailingStop, _Mapping]] = ..., display_quantity: _Optional[int] = ...) -> None: ...

class TrailingStop(_message.Message):
    __slots__ = ("amount", "percent")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    amount: _decimal_pb2.Decimal
    percent: _decimal_pb2.Decimal
    def __init__(self, amount: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., percent: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ...) -> None: ...

class ContingentTerms(_message.Message):
    __slots__ = ("kind", "target_price", "stop_loss_price")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_PRICE_FIELD_NUMBER: _ClassVar[int]
    STOP_LOSS_PRICE_FIELD_NUMBER: _ClassVar[int]
    kind: ContingencyKind
    target_price: _decimal_pb2.Decimal
    stop_loss_price: _decimal_pb2.Decimal
    def __init__(self, kind: _Optional[_Union[ContingencyKind, str]] = ..., target_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., stop_loss_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ...) -> None: ...

class Trade(_message.Message):
    __slots__ = ("name", "exec_id", "order_id", "symbol", "side", "quantity", "price", "execute_time", "product", "tag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    EXECUTE_TIME_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    exec_id: str
    order_id: str
    symbol: str
    side: _trading_pb2.Side
    quantity: int
    price: _decimal_pb2.Decimal
    execute_time: _timestamp_pb2.Timestamp
    product: _trading_pb2.Product
    tag: str
    def __init__(self, name: _Optional[str] = ..., exec_id: _Optional[str] = ..., order_id: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[_trading_pb2.Side, str]] = ..., quantity: _Optional[int] = ..., price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., execute_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., product: _Optional[_Union[_trading_pb2.Product, str]] = ..., tag: _Optional[str] = ...) -> None: ...

class PreviewOrderRequest(_message.Message):
    __slots__ = ("parent", "order")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    parent: str
    order: Order
    def __init__(self, parent: _Optional[str] = ..., order: _Optional[_Union[Order, _Mapping]] = ...) -> None: ...

class OrderPreview(_message.Message):
    __slots__ = ("acceptable", "refusal", "block_price", "reference_price", "block_amount", "order_value", "charges", "charges_total", "available", "risk_checks")
    ACCEPTABLE_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    BLOCK_PRICE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_PRICE_FIELD_NUMBER: _ClassVar[int]
    BLOCK_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    ORDER_VALUE_FIELD_NUMBER: _ClassVar[int]
    CHARGES_FIELD_NUMBER: _ClassVar[int]
    CHARGES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    RISK_CHECKS_FIELD_NUMBER: _ClassVar[int]
    acceptable: bool
    refusal: _status_pb2.Status
    block_price: _decimal_pb2.Decimal
    reference_price: _decimal_pb2.Decimal
    block_amount: _decimal_pb2.Decimal
    order_value: _decimal_pb2.Decimal
    charges: _containers.RepeatedCompositeFieldContainer[_charges_pb2.Charge]
    charges_total: _decimal_pb2.Decimal
    available: _decimal_pb2.Decimal
    risk_checks: _containers.RepeatedCompositeFieldContainer[RiskCheck]
    def __init__(self, acceptable: _Optional[bool] = ..., refusal: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., block_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., reference_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., block_amount: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., order_value: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., charges: _Optional[_Iterable[_Union[_charges_pb2.Charge, _Mapping]]] = ..., charges_total: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., available: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., risk_checks: _Optional[_Iterable[_Union[RiskCheck, _Mapping]]] = ...) -> None: ...

class RiskCheck(_message.Message):
    __slots__ = ("rule", "scope", "limit", "observed", "passed")
    RULE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    rule: str
    scope: str
    limit: _decimal_pb2.Decimal
    observed: _decimal_pb2.Decimal
    passed: bool
    def __init__(self, rule: _Optional[str] = ..., scope: _Optional[str] = ..., limit: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., observed: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., passed: _Optional[bool] = ...) -> None: ...

class PlaceOrderRequest(_message.Message):
    __slots__ = ("parent", "order", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    order: Order
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., order: _Optional[_Union[Order, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetOrderRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListOrdersRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "statuses", "tag")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    statuses: _containers.RepeatedScalarFieldContainer[OrderStatus]
    tag: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[OrderStatus, str]]] = ..., tag: _Optional[str] = ...) -> None: ...

class ListOrdersResponse(_message.Message):
    __slots__ = ("orders", "next_page_token")
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[Order]
    next_page_token: str
    def __init__(self, orders: _Optional[_Iterable[_Union[Order, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelOrderRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ModifyOrderRequest(_message.Message):
    __slots__ = ("name", "quantity", "limit_price", "stop_price", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    STOP_PRICE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    quantity: int
    limit_price: _decimal_pb2.Decimal
    stop_price: _decimal_pb2.Decimal
    request_id: str
    def __init__(self, name: _Optional[str] = ..., quantity: _Optional[int] = ..., limit_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., stop_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListTradesRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "order_id", "tag")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    order_id: str
    tag: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., order_id: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class ListTradesResponse(_message.Message):
    __slots__ = ("trades", "next_page_token")
    TRADES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    trades: _containers.RepeatedCompositeFieldContainer[Trade]
    next_page_token: str
    def __init__(self, trades: _Optional[_Iterable[_Union[Trade, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StreamOrderUpdatesRequest(_message.Message):
    __slots__ = ("parent", "after_event_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    after_event_id: str
    def __init__(self, parent: _Optional[str] = ..., after_event_id: _Optional[str] = ...) -> None: ...

class StreamOrderUpdatesResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: OrderEvent
    def __init__(self, event: _Optional[_Union[OrderEvent, _Mapping]] = ...) -> None: ...

class OrderEvent(_message.Message):
    __slots__ = ("event_id", "type", "order", "trade", "event_time", "request_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    TRADE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: OrderEventType
    order: Order
    trade: Trade
    event_time: _timestamp_pb2.Timestamp
    request_id: str
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[_Union[OrderEventType, str]] = ..., order: _Optional[_Union[Order, _Mapping]] = ..., trade: _Optional[_Union[Trade, _Mapping]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListAuditRecordsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditRecordsResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("record_id", "record_time", "action", "actor", "request_id", "client_ip", "user_id", "order_id", "order_version", "from_status", "to_status", "exec_id", "last_price", "bid_price", "ask_price", "detail")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_VERSION_FIELD_NUMBER: _ClassVar[int]
    FROM_STATUS_FIELD_NUMBER: _ClassVar[int]
    TO_STATUS_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_PRICE_FIELD_NUMBER: _ClassVar[int]
    BID_PRICE_FIELD_NUMBER: _ClassVar[int]
    ASK_PRICE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    record_id: int
    record_time: _timestamp_pb2.Timestamp
    action: str
    actor: str
    request_id: str
    client_ip: str
    user_id: str
    order_id: str
    order_version: int
    from_status: OrderStatus
    to_status: OrderStatus
    exec_id: str
    last_price: _decimal_pb2.Decimal
    bid_price: _decimal_pb2.Decimal
    ask_price: _decimal_pb2.Decimal
    detail: str
    def __init__(self, record_id: _Optional[int] = ..., record_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., action: _Optional[str] = ..., actor: _Optional[str] = ..., request_id: _Optional[str] = ..., client_ip: _Optional[str] = ..., user_id: _Optional[str] = ..., order_id: _Optional[str] = ..., order_version: _Optional[int] = ..., from_status: _Optional[_Union[OrderStatus, str]] = ..., to_status: _Optional[_Union[OrderStatus, str]] = ..., exec_id: _Optional[str] = ..., last_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., bid_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., ask_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., detail: _Optional[str] = ...) -> None: ...

class TradingControls(_message.Message):
    __slots__ = ("name", "trading_halted", "halt_reason", "halted_symbols", "version", "update_time", "cancelled_orders")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRADING_HALTED_FIELD_NUMBER: _ClassVar[int]
    HALT_REASON_FIELD_NUMBER: _ClassVar[int]
    HALTED_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_ORDERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    trading_halted: bool
    halt_reason: str
    halted_symbols: _containers.RepeatedScalarFieldContainer[str]
    version: int
    update_time: _timestamp_pb2.Timestamp
    cancelled_orders: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., trading_halted: _Optional[bool] = ..., halt_reason: _Optional[str] = ..., halted_symbols: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancelled_orders: _Optional[_Iterable[str]] = ...) -> None: ...

class GetTradingControlsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UpdateTradingControlsRequest(_message.Message):
    __slots__ = ("trading_controls", "update_mask", "request_id")
    TRADING_CONTROLS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    trading_controls: TradingControls
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, trading_controls: _Optional[_Union[TradingControls, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class RiskLimits(_message.Message):
    __slots__ = ("name", "max_order_value", "max_order_quantity", "max_open_orders", "max_position_quantity", "max_daily_loss", "trading_halted", "version", "update_time", "cancelled_orders")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_ORDER_VALUE_FIELD_NUMBER: _ClassVar[int]
    MAX_ORDER_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    MAX_OPEN_ORDERS_FIELD_NUMBER: _ClassVar[int]
    MAX_POSITION_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    MAX_DAILY_LOSS_FIELD_NUMBER: _ClassVar[int]
    TRADING_HALTED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_ORDERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    max_order_value: _decimal_pb2.Decimal
    max_order_quantity: int
    max_open_orders: int
    max_position_quantity: int
    max_daily_loss: _decimal_pb2.Decimal
    trading_halted: bool
    version: int
    update_time: _timestamp_pb2.Timestamp
    cancelled_orders: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., max_order_value: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., max_order_quantity: _Optional[int] = ..., max_open_orders: _Optional[int] = ..., max_position_quantity: _Optional[int] = ..., max_daily_loss: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., trading_halted: _Optional[bool] = ..., version: _Optional[int] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancelled_orders: _Optional[_Iterable[str]] = ...) -> None: ...

class GetRiskLimitsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UpdateRiskLimitsRequest(_message.Message):
    __slots__ = ("risk_limits", "update_mask", "request_id")
    RISK_LIMITS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    risk_limits: RiskLimits
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, risk_limits: _Optional[_Union[RiskLimits, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...
