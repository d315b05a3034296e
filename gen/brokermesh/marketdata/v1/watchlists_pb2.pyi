import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Watchlist(_message.Message):
    __slots__ = ("name", "watchlist_id", "display_name", "symbols", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WATCHLIST_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    watchlist_id: str
    display_name: str
    symbols: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., watchlist_id: _Optional[str] = ..., display_name: _Optional[str] = ..., symbols: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateWatchlistRequest(_message.Message):
    __slots__ = ("parent", "watchlist", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    watchlist: Watchlist
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., watchlist: _Optional[_Union[Watchlist, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetWatchlistRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListWatchlistsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWatchlistsResponse(_message.Message):
    __slots__ = ("watchlists", "next_page_token")
    WATCHLISTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    watchlists: _containers.RepeatedCompositeFieldContainer[Watchlist]
    next_page_token: str
    def __init__(self, watchlists: _Optional[_Iterable[_Union[Watchlist, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteWatchlistRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteWatchlistResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AddWatchlistSymbolsRequest(_message.Message):
    __slots__ = ("name", "symbols")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    name: str
    symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class AddWatchlistSymbolsResponse(_message.Message):
    __slots__ = ("watchlist", "symbols_added", "symbols_ignored")
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_ADDED_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_IGNORED_FIELD_NUMBER: _ClassVar[int]
    watchlist: Watchlist
    symbols_added: _containers.RepeatedScalarFieldContainer[str]
    symbols_ignored: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, watchlist: _Optional[_Union[Watchlist, _Mapping]] = ..., symbols_added: _Optional[_Iterable[str]] = ..., symbols_ignored: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveWatchlistSymbolsRequest(_message.Message):
    __slots__ = ("name", "symbols")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    name: str
    symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveWatchlistSymbolsResponse(_message.Message):
    __slots__ = ("watchlist", "symbols_removed", "symbols_ignored")
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_IGNORED_FIELD_NUMBER: _ClassVar[int]
    watchlist: Watchlist
    symbols_removed: _containers.RepeatedScalarFieldContainer[str]
    symbols_ignored: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, watchlist: _Optional[_Union[Watchlist, _Mapping]] = ..., symbols_removed: _Optional[_Iterable[str]] = ..., symbols_ignored: _Optional[_Iterable[str]] = ...) -> None: ...
