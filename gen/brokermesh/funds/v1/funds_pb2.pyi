import datetime

from brokermesh.type.v1 import charges_pb2 as _charges_pb2
from brokermesh.type.v1 import decimal_pb2 as _decimal_pb2
from brokermesh.type.v1 import invariants_pb2 as _invariants_pb2
from brokermesh.type.v1 import status_pb2 as _status_pb2
from brokermesh.type.v1 import trading_pb2 as _trading_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BlockKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BLOCK_KIND_UNSPECIFIED: _ClassVar[BlockKind]
    BLOCK_KIND_CASH: _ClassVar[BlockKind]
    BLOCK_KIND_SHARES: _ClassVar[BlockKind]

class BlockState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BLOCK_STATE_UNSPECIFIED: _ClassVar[BlockState]
    BLOCK_STATE_ACTIVE: _ClassVar[BlockState]
    BLOCK_STATE_CLOSED: _ClassVar[BlockState]

class WithdrawalState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WITHDRAWAL_STATE_UNSPECIFIED: _ClassVar[WithdrawalState]
    WITHDRAWAL_STATE_HELD: _ClassVar[WithdrawalState]
    WITHDRAWAL_STATE_PAID: _ClassVar[WithdrawalState]
    WITHDRAWAL_STATE_RETURNED: _ClassVar[WithdrawalState]

class DocumentFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOCUMENT_FORMAT_UNSPECIFIED: _ClassVar[DocumentFormat]
    DOCUMENT_FORMAT_CSV: _ClassVar[DocumentFormat]
    DOCUMENT_FORMAT_PDF: _ClassVar[DocumentFormat]
BLOCK_KIND_UNSPECIFIED: BlockKind
BLOCK_KIND_CASH: BlockKind
BLOCK_KIND_SHARES: BlockKind
BLOCK_STATE_UNSPECIFIED: BlockState
BLOCK_STATE_ACTIVE: BlockState
BLOCK_STATE_CLOSED: BlockState
WITHDRAWAL_STATE_UNSPECIFIED: WithdrawalState
WITHDRAWAL_STATE_HELD: WithdrawalState
WITHDRAWAL_STATE_PAID: WithdrawalState
WITHDRAWAL_STATE_RETURNED: WithdrawalState
DOCUMENT_FORMAT_UNSPECIFIED: DocumentFormat
DOCUMENT_FORMAT_CSV: DocumentFormat
DOCUMENT_FORMAT_PDF: DocumentFormat

class Funds(_message.Message):
    __slots__ = ("name", "user_id", "currency_code", "available", "blocked", "total", "update_time", "dues")
    NAME_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    user_id: str
    currency_code: str
    available: _decimal_pb2.Decimal
    blocked: _decimal_pb2.Decimal
    total: _decimal_pb2.Decimal
    update_time: _timestamp_pb2.Timestamp
    dues: _decimal_pb2.Decimal
    def __init__(self, name: _Optional[str] = ..., user_id: _Optional[str] = ..., currency_code: _Optional[str] = ..., available: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., blocked: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., total: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dues: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ...) -> None: ...

class GetFundsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DepositRequest(_message.Message):
    __slots__ = ("name", "amount", "request_id", "reference")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    amount: _decimal_pb2.Decimal
    request_id: str
    reference: str
    def __init__(self, name: _Optional[str] = ..., amount: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., request_id: _Optional[str] = ..., reference: _Optional[str] = ...) -> None: ...

class WithdrawRequest(_message.Message):
    __slots__ = ("name", "amount", "request_id", "reference")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    amount: _decimal_pb2.Decimal
    request_id: str
    reference: str
    def __init__(self, name: _Optional[str] = ..., amount: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., request_id: _Optional[str] = ..., reference: _Optional[str] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("name", "entry_id", "transaction_id", "account", "amount", "balance_after", "kind", "order_id", "exec_id", "request_id", "description", "create_time", "tag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_AFTER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    entry_id: str
    transaction_id: str
    account: str
    amount: _decimal_pb2.Decimal
    balance_after: _decimal_pb2.Decimal
    kind: str
    order_id: str
    exec_id: str
    request_id: str
    description: str
    create_time: _timestamp_pb2.Timestamp
    tag: str
    def __init__(self, name: _Optional[str] = ..., entry_id: _Optional[str] = ..., transaction_id: _Optional[str] = ..., account: _Optional[str] = ..., amount: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., balance_after: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., kind: _Optional[str] = ..., order_id: _Optional[str] = ..., exec_id: _Optional[str] = ..., request_id: _Optional[str] = ..., description: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tag: _Optional[str] = ...) -> None: ...

class ListLedgerEntriesRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLedgerEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LedgerEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[LedgerEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Block(_message.Message):
    __slots__ = ("name", "order_id", "user_id", "kind", "symbol", "amount", "remaining", "state", "create_time", "product", "quantity", "price", "filled_quantity", "charges", "released", "close_reason", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    FILLED_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    CHARGES_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    CLOSE_REASON_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    order_id: str
    user_id: str
    kind: BlockKind
    symbol: str
    amount: _decimal_pb2.Decimal
    remaining: _decimal_pb2.Decimal
    state: BlockState
    create_time: _timestamp_pb2.Timestamp
    product: _trading_pb2.Product
    quantity: int
    price: _decimal_pb2.Decimal
    filled_quantity: int
    charges: _decimal_pb2.Decimal
    released: _decimal_pb2.Decimal
    close_reason: str
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., order_id: _Optional[str] = ..., user_id: _Optional[str] = ..., kind: _Optional[_Union[BlockKind, str]] = ..., symbol: _Optional[str] = ..., amount: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., remaining: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., state: _Optional[_Union[BlockState, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., product: _Optional[_Union[_trading_pb2.Product, str]] = ..., quantity: _Optional[int] = ..., price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., filled_quantity: _Optional[int] = ..., charges: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., released: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., close_reason: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BlockFundsRequest(_message.Message):
    __slots__ = ("parent", "order_id", "symbol", "quantity", "price", "product", "request_id", "tag")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    parent: str
    order_id: str
    symbol: str
    quantity: int
    price: _decimal_pb2.Decimal
    product: _trading_pb2.Product
    request_id: str
    tag: str
    def __init__(self, parent: _Optional[str] = ..., order_id: _Optional[str] = ..., symbol: _Optional[str] = ..., quantity: _Optional[int] = ..., price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., product: _Optional[_Union[_trading_pb2.Product, str]] = ..., request_id: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class BatchBlockFundsRequest(_message.Message):
    __slots__ = ("parent", "requests")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    parent: str
    requests: _containers.RepeatedCompositeFieldContainer[BlockFundsRequest]
    def __init__(self, parent: _Optional[str] = ..., requests: _Optional[_Iterable[_Union[BlockFundsRequest, _Mapping]]] = ...) -> None: ...

class BatchBlockFundsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BlockResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BlockResult, _Mapping]]] = ...) -> None: ...

class BlockResult(_message.Message):
    __slots__ = ("block", "error")
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    block: Block
    error: _status_pb2.Status
    def __init__(self, block: _Optional[_Union[Block, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class BlockHoldingsRequest(_message.Message):
    __slots__ = ("parent", "order_id", "symbol", "quantity", "product", "request_id", "tag")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    parent: str
    order_id: str
    symbol: str
    quantity: int
    product: _trading_pb2.Product
    request_id: str
    tag: str
    def __init__(self, parent: _Optional[str] = ..., order_id: _Optional[str] = ..., symbol: _Optional[str] = ..., quantity: _Optional[int] = ..., product: _Optional[_Union[_trading_pb2.Product, str]] = ..., request_id: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class BatchBlockHoldingsRequest(_message.Message):
    __slots__ = ("parent", "requests")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    parent: str
    requests: _containers.RepeatedCompositeFieldContainer[BlockHoldingsRequest]
    def __init__(self, parent: _Optional[str] = ..., requests: _Optional[_Iterable[_Union[BlockHoldingsRequest, _Mapping]]] = ...) -> None: ...

class BatchBlockHoldingsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BlockResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BlockResult, _Mapping]]] = ...) -> None: ...

class PreviewBlockRequest(_message.Message):
    __slots__ = ("parent", "side", "symbol", "quantity", "price", "product")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    side: _trading_pb2.Side
    symbol: str
    quantity: int
    price: _decimal_pb2.Decimal
    product: _trading_pb2.Product
    def __init__(self, parent: _Optional[str] = ..., side: _Optional[_Union[_trading_pb2.Side, str]] = ..., symbol: _Optional[str] = ..., quantity: _Optional[int] = ..., price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., product: _Optional[_Union[_trading_pb2.Product, str]] = ...) -> None: ...

class BlockPreview(_message.Message):
    __slots__ = ("kind", "amount", "order_value", "charges", "charges_total", "available", "refusal")
    KIND_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    ORDER_VALUE_FIELD_NUMBER: _ClassVar[int]
    CHARGES_FIELD_NUMBER: _ClassVar[int]
    CHARGES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    kind: BlockKind
    amount: _decimal_pb2.Decimal
    order_value: _decimal_pb2.Decimal
    charges: _containers.RepeatedCompositeFieldContainer[_charges_pb2.Charge]
    charges_total: _decimal_pb2.Decimal
    available: _decimal_pb2.Decimal
    refusal: _status_pb2.Status
    def __init__(self, kind: _Optional[_Union[BlockKind, str]] = ..., amount: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., order_value: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., charges: _Optional[_Iterable[_Union[_charges_pb2.Charge, _Mapping]]] = ..., charges_total: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., available: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., refusal: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class AdjustBlockRequest(_message.Message):
    __slots__ = ("name", "quantity", "price", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    quantity: int
    price: _decimal_pb2.Decimal
    request_id: str
    def __init__(self, name: _Optional[str] = ..., quantity: _Optional[int] = ..., price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ReleaseBlockRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetBlockRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListBlocksRequest(_message.Message):
    __slots__ = ("parent", "state", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    state: BlockState
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., state: _Optional[_Union[BlockState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListBlocksResponse(_message.Message):
    __slots__ = ("blocks", "next_page_token")
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    blocks: _containers.RepeatedCompositeFieldContainer[Block]
    next_page_token: str
    def __init__(self, blocks: _Optional[_Iterable[_Union[Block, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class BankAccount(_message.Message):
    __slots__ = ("name", "account_number", "ifsc")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    IFSC_FIELD_NUMBER: _ClassVar[int]
    name: str
    account_number: str
    ifsc: str
    def __init__(self, name: _Optional[str] = ..., account_number: _Optional[str] = ..., ifsc: _Optional[str] = ...) -> None: ...

class SetBankAccountRequest(_message.Message):
    __slots__ = ("bank_account",)
    BANK_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    bank_account: BankAccount
    def __init__(self, bank_account: _Optional[_Union[BankAccount, _Mapping]] = ...) -> None: ...

class GetBankAccountRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Withdrawal(_message.Message):
    __slots__ = ("name", "withdrawal_id", "amount", "state", "bank_account", "request_id", "bank_reference", "failure", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWAL_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BANK_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BANK_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    withdrawal_id: str
    amount: _decimal_pb2.Decimal
    state: WithdrawalState
    bank_account: BankAccount
    request_id: str
    bank_reference: str
    failure: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., withdrawal_id: _Optional[str] = ..., amount: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., state: _Optional[_Union[WithdrawalState, str]] = ..., bank_account: _Optional[_Union[BankAccount, _Mapping]] = ..., request_id: _Optional[str] = ..., bank_reference: _Optional[str] = ..., failure: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateWithdrawalRequest(_message.Message):
    __slots__ = ("parent", "amount", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    amount: _decimal_pb2.Decimal
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., amount: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetWithdrawalRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListWithdrawalsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWithdrawalsResponse(_message.Message):
    __slots__ = ("withdrawals", "next_page_token")
    WITHDRAWALS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    withdrawals: _containers.RepeatedCompositeFieldContainer[Withdrawal]
    next_page_token: str
    def __init__(self, withdrawals: _Optional[_Iterable[_Union[Withdrawal, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAccountStatementRequest(_message.Message):
    __slots__ = ("parent", "start_date", "end_date", "format")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    start_date: str
    end_date: str
    format: DocumentFormat
    def __init__(self, parent: _Optional[str] = ..., start_date: _Optional[str] = ..., end_date: _Optional[str] = ..., format: _Optional[_Union[DocumentFormat, str]] = ...) -> None: ...

class GetContractNoteRequest(_message.Message):
    __slots__ = ("parent", "trading_day", "format")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    TRADING_DAY_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    trading_day: str
    format: DocumentFormat
    def __init__(self, parent: _Optional[str] = ..., trading_day: _Optional[str] = ..., format: _Optional[_Union[DocumentFormat, str]] = ...) -> None: ...

class DocumentTotal(_message.Message):
    __slots__ = ("name", "amount")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    amount: _decimal_pb2.Decimal
    def __init__(self, name: _Optional[str] = ..., amount: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("content_type", "filename", "content", "totals")
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    content_type: str
    filename: str
    content: bytes
    totals: _containers.RepeatedCompositeFieldContainer[DocumentTotal]
    def __init__(self, content_type: _Optional[str] = ..., filename: _Optional[str] = ..., content: _Optional[bytes] = ..., totals: _Optional[_Iterable[_Union[DocumentTotal, _Mapping]]] = ...) -> None: ...

class CheckInvariantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckInvariantsResponse(_message.Message):
    __slots__ = ("violations", "accounts_checked")
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    violations: _containers.RepeatedCompositeFieldContainer[_invariants_pb2.InvariantViolation]
    accounts_checked: int
    def __init__(self, violations: _Optional[_Iterable[_Union[_invariants_pb2.InvariantViolation, _Mapping]]] = ..., accounts_checked: _Optional[int] = ...) -> None: ...
