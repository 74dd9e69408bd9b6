import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SocketAccess(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOCKET_ACCESS_UNSPECIFIED: _ClassVar[SocketAccess]
    SOCKET_ACCESS_NONE: _ClassVar[SocketAccess]
    SOCKET_ACCESS_RAW: _ClassVar[SocketAccess]
    SOCKET_ACCESS_LIMITED: _ClassVar[SocketAccess]

class SocketMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOCKET_MODE_UNSPECIFIED: _ClassVar[SocketMode]
    SOCKET_MODE_RW: _ClassVar[SocketMode]
    SOCKET_MODE_RO: _ClassVar[SocketMode]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_ADMIN: _ClassVar[Role]
    ROLE_SPAWNER: _ClassVar[Role]
    ROLE_AUDITOR: _ClassVar[Role]
    ROLE_SYNC: _ClassVar[Role]
    ROLE_WATCHER: _ClassVar[Role]

class GrantStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRANT_STATUS_UNSPECIFIED: _ClassVar[GrantStatus]
    GRANT_STATUS_ACTIVE: _ClassVar[GrantStatus]
    GRANT_STATUS_REVOKED: _ClassVar[GrantStatus]
    GRANT_STATUS_EXPIRED: _ClassVar[GrantStatus]
SOCKET_ACCESS_UNSPECIFIED: SocketAccess
SOCKET_ACCESS_NONE: SocketAccess
SOCKET_ACCESS_RAW: SocketAccess
SOCKET_ACCESS_LIMITED: SocketAccess
SOCKET_MODE_UNSPECIFIED: SocketMode
SOCKET_MODE_RW: SocketMode
SOCKET_MODE_RO: SocketMode
ROLE_UNSPECIFIED: Role
ROLE_ADMIN: Role
ROLE_SPAWNER: Role
ROLE_AUDITOR: Role
ROLE_SYNC: Role
ROLE_WATCHER: Role
GRANT_STATUS_UNSPECIFIED: GrantStatus
GRANT_STATUS_ACTIVE: GrantStatus
GRANT_STATUS_REVOKED: GrantStatus
GRANT_STATUS_EXPIRED: GrantStatus

class Limits(_message.Message):
    __slots__ = ("max_containers", "max_volumes", "max_networks", "max_storage_gb", "cpu_cap_cores", "mem_cap_gb", "allow_dangerous_flags", "max_pids", "publish", "allow_build", "pull_allow", "push_allow")
    MAX_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    MAX_VOLUMES_FIELD_NUMBER: _ClassVar[int]
    MAX_NETWORKS_FIELD_NUMBER: _ClassVar[int]
    MAX_STORAGE_GB_FIELD_NUMBER: _ClassVar[int]
    CPU_CAP_CORES_FIELD_NUMBER: _ClassVar[int]
    MEM_CAP_GB_FIELD_NUMBER: _ClassVar[int]
    ALLOW_DANGEROUS_FLAGS_FIELD_NUMBER: _ClassVar[int]
    MAX_PIDS_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    ALLOW_BUILD_FIELD_NUMBER: _ClassVar[int]
    PULL_ALLOW_FIELD_NUMBER: _ClassVar[int]
    PUSH_ALLOW_FIELD_NUMBER: _ClassVar[int]
    max_containers: int
    max_volumes: int
    max_networks: int
    max_storage_gb: float
    cpu_cap_cores: float
    mem_cap_gb: float
    allow_dangerous_flags: bool
    max_pids: int
    publish: str
    allow_build: bool
    pull_allow: _containers.RepeatedScalarFieldContainer[str]
    push_allow: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, max_containers: _Optional[int] = ..., max_volumes: _Optional[int] = ..., max_networks: _Optional[int] = ..., max_storage_gb: _Optional[float] = ..., cpu_cap_cores: _Optional[float] = ..., mem_cap_gb: _Optional[float] = ..., allow_dangerous_flags: _Optional[bool] = ..., max_pids: _Optional[int] = ..., publish: _Optional[str] = ..., allow_build: _Optional[bool] = ..., pull_allow: _Optional[_Iterable[str]] = ..., push_allow: _Optional[_Iterable[str]] = ...) -> None: ...

class EffectiveLimits(_message.Message):
    __slots__ = ("max_containers", "max_volumes", "max_networks", "max_storage_gb", "cpu_cap_cores", "mem_cap_gb", "allow_dangerous_flags", "max_pids", "publish", "allow_build", "pull_allow", "push_allow")
    MAX_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    MAX_VOLUMES_FIELD_NUMBER: _ClassVar[int]
    MAX_NETWORKS_FIELD_NUMBER: _ClassVar[int]
    MAX_STORAGE_GB_FIELD_NUMBER: _ClassVar[int]
    CPU_CAP_CORES_FIELD_NUMBER: _ClassVar[int]
    MEM_CAP_GB_FIELD_NUMBER: _ClassVar[int]
    ALLOW_DANGEROUS_FLAGS_FIELD_NUMBER: _ClassVar[int]
    MAX_PIDS_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    ALLOW_BUILD_FIELD_NUMBER: _ClassVar[int]
    PULL_ALLOW_FIELD_NUMBER: _ClassVar[int]
    PUSH_ALLOW_FIELD_NUMBER: _ClassVar[int]
    max_containers: int
    max_volumes: int
    max_networks: int
    max_storage_gb: float
    cpu_cap_cores: float
    mem_cap_gb: float
    allow_dangerous_flags: bool
    max_pids: int
    publish: str
    allow_build: bool
    pull_allow: _containers.RepeatedScalarFieldContainer[str]
    push_allow: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, max_containers: _Optional[int] = ..., max_volumes: _Optional[int] = ..., max_networks: _Optional[int] = ..., max_storage_gb: _Optional[float] = ..., cpu_cap_cores: _Optional[float] = ..., mem_cap_gb: _Optional[float] = ..., allow_dangerous_flags: _Optional[bool] = ..., max_pids: _Optional[int] = ..., publish: _Optional[str] = ..., allow_build: _Optional[bool] = ..., pull_allow: _Optional[_Iterable[str]] = ..., push_allow: _Optional[_Iterable[str]] = ...) -> None: ...

class Subject(_message.Message):
    __slots__ = ("user", "group")
    USER_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    user: str
    group: str
    def __init__(self, user: _Optional[str] = ..., group: _Optional[str] = ...) -> None: ...

class GrantSpec(_message.Message):
    __slots__ = ("socket", "socket_mode", "privileged", "limits")
    SOCKET_FIELD_NUMBER: _ClassVar[int]
    SOCKET_MODE_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGED_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    socket: SocketAccess
    socket_mode: SocketMode
    privileged: bool
    limits: Limits
    def __init__(self, socket: _Optional[_Union[SocketAccess, str]] = ..., socket_mode: _Optional[_Union[SocketMode, str]] = ..., privileged: _Optional[bool] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ("id", "subject", "spec", "expires_at", "reason", "issued_by", "issued_at", "status", "ended_seq", "ended_reason", "builtin", "replayed")
    ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ISSUED_BY_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ENDED_SEQ_FIELD_NUMBER: _ClassVar[int]
    ENDED_REASON_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    id: int
    subject: Subject
    spec: GrantSpec
    expires_at: _timestamp_pb2.Timestamp
    reason: str
    issued_by: str
    issued_at: _timestamp_pb2.Timestamp
    status: GrantStatus
    ended_seq: int
    ended_reason: str
    builtin: bool
    replayed: bool
    def __init__(self, id: _Optional[int] = ..., subject: _Optional[_Union[Subject, _Mapping]] = ..., spec: _Optional[_Union[GrantSpec, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., issued_by: _Optional[str] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[GrantStatus, str]] = ..., ended_seq: _Optional[int] = ..., ended_reason: _Optional[str] = ..., builtin: _Optional[bool] = ..., replayed: _Optional[bool] = ...) -> None: ...

class Position(_message.Message):
    __slots__ = ("seq", "time")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: _timestamp_pb2.Timestamp
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ContainerFacts(_message.Message):
    __slots__ = ("id", "name", "image", "labels", "mounts", "privileged", "running")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MOUNTS_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    image: str
    labels: _containers.ScalarMap[str, str]
    mounts: _containers.RepeatedCompositeFieldContainer[Mount]
    privileged: bool
    running: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., image: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., mounts: _Optional[_Iterable[_Union[Mount, _Mapping]]] = ..., privileged: _Optional[bool] = ..., running: _Optional[bool] = ...) -> None: ...

class Mount(_message.Message):
    __slots__ = ("source", "destination", "rw")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    RW_FIELD_NUMBER: _ClassVar[int]
    source: str
    destination: str
    rw: bool
    def __init__(self, source: _Optional[str] = ..., destination: _Optional[str] = ..., rw: _Optional[bool] = ...) -> None: ...

class EventGap(_message.Message):
    __slots__ = ("from_unix_nanos", "to_unix_nanos", "details")
    FROM_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    TO_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    from_unix_nanos: int
    to_unix_nanos: int
    details: str
    def __init__(self, from_unix_nanos: _Optional[int] = ..., to_unix_nanos: _Optional[int] = ..., details: _Optional[str] = ...) -> None: ...

class HostEvent(_message.Message):
    __slots__ = ("number", "event", "reconciled", "gap", "facts")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    RECONCILED_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    number: int
    event: DockerEvent
    reconciled: ContainerFacts
    gap: EventGap
    facts: ContainerFacts
    def __init__(self, number: _Optional[int] = ..., event: _Optional[_Union[DockerEvent, _Mapping]] = ..., reconciled: _Optional[_Union[ContainerFacts, _Mapping]] = ..., gap: _Optional[_Union[EventGap, _Mapping]] = ..., facts: _Optional[_Union[ContainerFacts, _Mapping]] = ...) -> None: ...

class RecordHostEventsRequest(_message.Message):
    __slots__ = ("host_id", "events")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    events: _containers.RepeatedCompositeFieldContainer[HostEvent]
    def __init__(self, host_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[HostEvent, _Mapping]]] = ...) -> None: ...

class RecordHostEventsResponse(_message.Message):
    __slots__ = ("last_number", "recorded", "duplicates")
    LAST_NUMBER_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    last_number: int
    recorded: int
    duplicates: int
    def __init__(self, last_number: _Optional[int] = ..., recorded: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class DockerEvent(_message.Message):
    __slots__ = ("type", "action", "id", "time_nano", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_NANO_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    type: str
    action: str
    id: str
    time_nano: int
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, type: _Optional[str] = ..., action: _Optional[str] = ..., id: _Optional[str] = ..., time_nano: _Optional[int] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ImportDockerEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[DockerEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[DockerEvent, _Mapping]]] = ...) -> None: ...

class ImportDockerEventsResponse(_message.Message):
    __slots__ = ("recorded", "already_held", "ignored")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_HELD_FIELD_NUMBER: _ClassVar[int]
    IGNORED_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    already_held: int
    ignored: int
    def __init__(self, recorded: _Optional[int] = ..., already_held: _Optional[int] = ..., ignored: _Optional[int] = ...) -> None: ...

class MutationReceipt(_message.Message):
    __slots__ = ("seq", "replayed", "first_seq")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    replayed: bool
    first_seq: int
    def __init__(self, seq: _Optional[int] = ..., replayed: _Optional[bool] = ..., first_seq: _Optional[int] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ("name", "builtin", "members", "grants", "created_seq", "seq", "replayed", "synced")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_SEQ_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    name: str
    builtin: bool
    members: _containers.RepeatedScalarFieldContainer[str]
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    created_seq: int
    seq: int
    replayed: bool
    synced: bool
    def __init__(self, name: _Optional[str] = ..., builtin: _Optional[bool] = ..., members: _Optional[_Iterable[str]] = ..., grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., created_seq: _Optional[int] = ..., seq: _Optional[int] = ..., replayed: _Optional[bool] = ..., synced: _Optional[bool] = ...) -> None: ...

class CreateGroupRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteGroupRequest(_message.Message):
    __slots__ = ("name", "request_id", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListGroupsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GroupSummary(_message.Message):
    __slots__ = ("name", "builtin", "member_count", "active_grant_count", "created_seq", "synced")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    MEMBER_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_GRANT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_SEQ_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    name: str
    builtin: bool
    member_count: int
    active_grant_count: int
    created_seq: int
    synced: bool
    def __init__(self, name: _Optional[str] = ..., builtin: _Optional[bool] = ..., member_count: _Optional[int] = ..., active_grant_count: _Optional[int] = ..., created_seq: _Optional[int] = ..., synced: _Optional[bool] = ...) -> None: ...

class ListGroupsResponse(_message.Message):
    __slots__ = ("groups", "seq")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[GroupSummary]
    seq: int
    def __init__(self, groups: _Optional[_Iterable[_Union[GroupSummary, _Mapping]]] = ..., seq: _Optional[int] = ...) -> None: ...

class GetGroupRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class MemberRequest(_message.Message):
    __slots__ = ("group", "user", "request_id", "users", "reason")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    group: str
    user: str
    request_id: str
    users: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    def __init__(self, group: _Optional[str] = ..., user: _Optional[str] = ..., request_id: _Optional[str] = ..., users: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ...) -> None: ...

class SetGroupSyncRequest(_message.Message):
    __slots__ = ("group", "synced", "reason", "request_id")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    group: str
    synced: bool
    reason: str
    request_id: str
    def __init__(self, group: _Optional[str] = ..., synced: _Optional[bool] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class IssueGrantRequest(_message.Message):
    __slots__ = ("subject", "spec", "expires_at", "reason", "request_id")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    subject: Subject
    spec: GrantSpec
    expires_at: _timestamp_pb2.Timestamp
    reason: str
    request_id: str
    def __init__(self, subject: _Optional[_Union[Subject, _Mapping]] = ..., spec: _Optional[_Union[GrantSpec, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RevokeGrantRequest(_message.Message):
    __slots__ = ("grant_id", "reason", "request_id")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    grant_id: int
    reason: str
    request_id: str
    def __init__(self, grant_id: _Optional[int] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListGrantsRequest(_message.Message):
    __slots__ = ("subject", "include_inactive")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_INACTIVE_FIELD_NUMBER: _ClassVar[int]
    subject: Subject
    include_inactive: bool
    def __init__(self, subject: _Optional[_Union[Subject, _Mapping]] = ..., include_inactive: _Optional[bool] = ...) -> None: ...

class ListGrantsResponse(_message.Message):
    __slots__ = ("grants", "seq")
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    seq: int
    def __init__(self, grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., seq: _Optional[int] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("name", "role", "request_id", "expires_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: Role
    request_id: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., request_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("name", "role", "secret", "seq", "replayed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: Role
    secret: str
    seq: int
    replayed: bool
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., secret: _Optional[str] = ..., seq: _Optional[int] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("name", "role", "created_seq", "created_by", "revoked", "revoked_seq", "expires_at", "expired")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CREATED_SEQ_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    REVOKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: Role
    created_seq: int
    created_by: str
    revoked: bool
    revoked_seq: int
    expires_at: _timestamp_pb2.Timestamp
    expired: bool
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., created_seq: _Optional[int] = ..., created_by: _Optional[str] = ..., revoked: _Optional[bool] = ..., revoked_seq: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expired: _Optional[bool] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class Contribution(_message.Message):
    __slots__ = ("grant_id", "via_group", "spec", "expires_at", "reason")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    VIA_GROUP_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    grant_id: int
    via_group: str
    spec: GrantSpec
    expires_at: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, grant_id: _Optional[int] = ..., via_group: _Optional[str] = ..., spec: _Optional[_Union[GrantSpec, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class Access(_message.Message):
    __slots__ = ("user", "socket", "socket_mode", "privileged", "limits", "provenance", "seq", "evaluated_at")
    USER_FIELD_NUMBER: _ClassVar[int]
    SOCKET_FIELD_NUMBER: _ClassVar[int]
    SOCKET_MODE_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGED_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_AT_FIELD_NUMBER: _ClassVar[int]
    user: str
    socket: SocketAccess
    socket_mode: SocketMode
    privileged: bool
    limits: EffectiveLimits
    provenance: _containers.RepeatedCompositeFieldContainer[Contribution]
    seq: int
    evaluated_at: _timestamp_pb2.Timestamp
    def __init__(self, user: _Optional[str] = ..., socket: _Optional[_Union[SocketAccess, str]] = ..., socket_mode: _Optional[_Union[SocketMode, str]] = ..., privileged: _Optional[bool] = ..., limits: _Optional[_Union[EffectiveLimits, _Mapping]] = ..., provenance: _Optional[_Iterable[_Union[Contribution, _Mapping]]] = ..., seq: _Optional[int] = ..., evaluated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CheckAccessRequest(_message.Message):
    __slots__ = ("user", "at", "omit_provenance", "min_seq")
    USER_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    OMIT_PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    MIN_SEQ_FIELD_NUMBER: _ClassVar[int]
    user: str
    at: Position
    omit_provenance: bool
    min_seq: int
    def __init__(self, user: _Optional[str] = ..., at: _Optional[_Union[Position, _Mapping]] = ..., omit_provenance: _Optional[bool] = ..., min_seq: _Optional[int] = ...) -> None: ...

class AuthorizeSpawnRequest(_message.Message):
    __slots__ = ("user", "server_name", "image", "request_id")
    USER_FIELD_NUMBER: _ClassVar[int]
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    user: str
    server_name: str
    image: str
    request_id: str
    def __init__(self, user: _Optional[str] = ..., server_name: _Optional[str] = ..., image: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class SpawnFragments(_message.Message):
    __slots__ = ("binds", "privileged", "labels", "env")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BINDS_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    binds: _containers.RepeatedScalarFieldContainer[str]
    privileged: bool
    labels: _containers.ScalarMap[str, str]
    env: _containers.ScalarMap[str, str]
    def __init__(self, binds: _Optional[_Iterable[str]] = ..., privileged: _Optional[bool] = ..., labels: _Optional[_Mapping[str, str]] = ..., env: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("decision_id", "seq", "evaluated_at_seq", "allowed", "reason", "access", "fragments", "replayed")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_AT_SEQ_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    seq: int
    evaluated_at_seq: int
    allowed: bool
    reason: str
    access: Access
    fragments: SpawnFragments
    replayed: bool
    def __init__(self, decision_id: _Optional[str] = ..., seq: _Optional[int] = ..., evaluated_at_seq: _Optional[int] = ..., allowed: _Optional[bool] = ..., reason: _Optional[str] = ..., access: _Optional[_Union[Access, _Mapping]] = ..., fragments: _Optional[_Union[SpawnFragments, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class WhoHasAccessRequest(_message.Message):
    __slots__ = ("at",)
    AT_FIELD_NUMBER: _ClassVar[int]
    at: Position
    def __init__(self, at: _Optional[_Union[Position, _Mapping]] = ...) -> None: ...

class WhoHasAccessResponse(_message.Message):
    __slots__ = ("users", "seq")
    USERS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[Access]
    seq: int
    def __init__(self, users: _Optional[_Iterable[_Union[Access, _Mapping]]] = ..., seq: _Optional[int] = ...) -> None: ...

class AccessIntervalsRequest(_message.Message):
    __slots__ = ("to", "user", "socket", "privileged")
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SOCKET_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGED_FIELD_NUMBER: _ClassVar[int]
    to: Position
    user: str
    socket: SocketAccess
    privileged: bool
    def __init__(self, to: _Optional[_Union[Position, _Mapping]] = ..., user: _Optional[str] = ..., socket: _Optional[_Union[SocketAccess, str]] = ..., privileged: _Optional[bool] = ..., **kwargs) -> None: ...

class HeldContainer(_message.Message):
    __slots__ = ("id", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class AccessInterval(_message.Message):
    __slots__ = ("user", "from_seq", "began_before", "to_seq", "to", "socket", "socket_mode", "privileged", "grants", "held", "containers")
    USER_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    BEGAN_BEFORE_FIELD_NUMBER: _ClassVar[int]
    TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    SOCKET_FIELD_NUMBER: _ClassVar[int]
    SOCKET_MODE_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGED_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    user: str
    from_seq: int
    began_before: bool
    to_seq: int
    to: _timestamp_pb2.Timestamp
    socket: SocketAccess
    socket_mode: SocketMode
    privileged: bool
    grants: _containers.RepeatedCompositeFieldContainer[Contribution]
    held: bool
    containers: _containers.RepeatedCompositeFieldContainer[HeldContainer]
    def __init__(self, user: _Optional[str] = ..., from_seq: _Optional[int] = ..., began_before: _Optional[bool] = ..., to_seq: _Optional[int] = ..., to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., socket: _Optional[_Union[SocketAccess, str]] = ..., socket_mode: _Optional[_Union[SocketMode, str]] = ..., privileged: _Optional[bool] = ..., grants: _Optional[_Iterable[_Union[Contribution, _Mapping]]] = ..., held: _Optional[bool] = ..., containers: _Optional[_Iterable[_Union[HeldContainer, _Mapping]]] = ..., **kwargs) -> None: ...

class AccessIntervalsResponse(_message.Message):
    __slots__ = ("intervals", "from_seq", "to_seq", "to")
    INTERVALS_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    intervals: _containers.RepeatedCompositeFieldContainer[AccessInterval]
    from_seq: int
    to_seq: int
    to: _timestamp_pb2.Timestamp
    def __init__(self, intervals: _Optional[_Iterable[_Union[AccessInterval, _Mapping]]] = ..., from_seq: _Optional[int] = ..., to_seq: _Optional[int] = ..., to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., **kwargs) -> None: ...

class Entry(_message.Message):
    __slots__ = ("seq", "time", "time_unix_nanos", "actor", "request_id", "kind", "prev_hash", "hash", "body")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: _timestamp_pb2.Timestamp
    time_unix_nanos: int
    actor: str
    request_id: str
    kind: str
    prev_hash: bytes
    hash: bytes
    body: bytes
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_unix_nanos: _Optional[int] = ..., actor: _Optional[str] = ..., request_id: _Optional[str] = ..., kind: _Optional[str] = ..., prev_hash: _Optional[bytes] = ..., hash: _Optional[bytes] = ..., body: _Optional[bytes] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("from_seq", "follow", "kinds", "subject")
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    from_seq: int
    follow: bool
    kinds: _containers.RepeatedScalarFieldContainer[str]
    subject: str
    def __init__(self, from_seq: _Optional[int] = ..., follow: _Optional[bool] = ..., kinds: _Optional[_Iterable[str]] = ..., subject: _Optional[str] = ...) -> None: ...

class HeadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HeadResponse(_message.Message):
    __slots__ = ("seq", "hash", "earliest_seq", "time", "writable", "write_problem", "role", "node_id", "writer_id", "cluster_head_seq")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    EARLIEST_SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    WRITABLE_FIELD_NUMBER: _ClassVar[int]
    WRITE_PROBLEM_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    hash: bytes
    earliest_seq: int
    time: _timestamp_pb2.Timestamp
    writable: bool
    write_problem: str
    role: str
    node_id: str
    writer_id: str
    cluster_head_seq: int
    def __init__(self, seq: _Optional[int] = ..., hash: _Optional[bytes] = ..., earliest_seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., writable: _Optional[bool] = ..., write_problem: _Optional[str] = ..., role: _Optional[str] = ..., node_id: _Optional[str] = ..., writer_id: _Optional[str] = ..., cluster_head_seq: _Optional[int] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("from_seq", "to_seq")
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    from_seq: int
    to_seq: int
    def __init__(self, from_seq: _Optional[int] = ..., to_seq: _Optional[int] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("ok", "checked", "first_bad_seq", "problem", "from_seq", "to_seq", "head_hash")
    OK_FIELD_NUMBER: _ClassVar[int]
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    FIRST_BAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    checked: int
    first_bad_seq: int
    problem: str
    from_seq: int
    to_seq: int
    head_hash: bytes
    def __init__(self, ok: _Optional[bool] = ..., checked: _Optional[int] = ..., first_bad_seq: _Optional[int] = ..., problem: _Optional[str] = ..., from_seq: _Optional[int] = ..., to_seq: _Optional[int] = ..., head_hash: _Optional[bytes] = ...) -> None: ...
