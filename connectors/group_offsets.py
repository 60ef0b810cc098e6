"""A consumer group's committed offsets: read them, and move them while the group has no active member.

Kafka's rule, kept here: offsets are rewritten only for a group with no members (``kafka-consumer-groups
--reset-offsets`` refuses otherwise), since a running member would go on from its own positions and commit
over the new ones. A stopped member leaves the group at once (LeaveGroup) or after its session timeout.

The embedded broker (Tansu 0.6.0) never removes a member that has gone — measured: an aiokafka consumer
and a Faust worker stopped cleanly stay listed, ``Stable``, indefinitely; the next member to join evicts
them after its rebalance wait — and it refuses commits from outside the group while one is listed
(UNKNOWN_MEMBER_ID). So there the tool cannot tell a departed worker from a running one. Given
``members_gone`` (the operator's word that every worker is stopped), it commits in the name of the listed
member, finding the group's generation by asking (ILLEGAL_GENERATION until it is right). On any other
broker a listed member is an active one and the reset is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.commit import OffsetCommitRequest

from streams.runtime.broker_quirks import fetched_end_offsets
from streams.runtime.topic_metadata import partitions_by_topic

ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID = 22, 25
MAX_GENERATION = 100_000


class GroupActiveError(RuntimeError):
    """The group has members: its offsets are not changed."""


@dataclass(frozen=True)
class GroupState:
    group: str
    state: str  # Empty, Stable, PreparingRebalance, CompletingRebalance, Dead
    members: tuple[str, ...]  # member ids

    def as_dict(self) -> dict[str, object]:
        return {"group": self.group, "state": self.state, "members": list(self.members)}


@dataclass(frozen=True)
class OffsetRow:
    topic: str
    partition: int
    committed: int | None
    log_start: int
    log_end: int

    @property
    def lag(self) -> int | None:
        return None if self.committed is None else max(self.log_end - self.committed, 0)

    def as_dict(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "log_start": self.log_start,
            "log_end": self.log_end,
            "lag": self.lag,
        }


async def describe_group(bootstrap: str, group: str) -> GroupState:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = (await admin.describe_consumer_groups([group]))[0]
    finally:
        await admin.close()
    _error, name, state, _protocol_type, _protocol, members, *_ = response.groups[0]
    return GroupState(name, state or "Dead", tuple(member[0] for member in members))


async def all_partitions(bootstrap: str, topics: Iterable[str] | None = None) -> list[TopicPartition]:
    """Partitions of ``topics`` that exist (every topic but Kafka's internal ones when None)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        known = await partitions_by_topic(consumer)
        wanted = sorted(known if topics is None else set(topics) & set(known))
        return [TopicPartition(t, p) for t in wanted if not t.startswith("__") for p in sorted(known[t])]
    finally:
        await consumer.stop()


async def committed_offsets(
    bootstrap: str, group: str, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """The group's committed offset per partition (None: nothing committed)."""
    tps = list(partitions)
    if not tps:
        return {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # partitions named: asking for "all" fails to decode against Tansu
        answer = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    out: dict[TopicPartition, int | None] = {}
    for tp in tps:
        meta = answer.get(tp)
        out[tp] = None if meta is None or meta.offset < 0 else int(meta.offset)
    return out


async def offset_rows(
    bootstrap: str, group: str, partitions: Iterable[TopicPartition], *, only_committed: bool = False
) -> list[OffsetRow]:
    tps = list(partitions)
    committed = await committed_offsets(bootstrap, group, tps)
    if only_committed:
        tps = [tp for tp in tps if committed[tp] is not None]
    ends = await fetched_end_offsets(bootstrap, tps)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        starts = await consumer.beginning_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    return [OffsetRow(tp.topic, tp.partition, committed[tp], starts[tp], ends[tp]) for tp in tps]


async def commit_offsets(
    bootstrap: str,
    group: str,
    offsets: Mapping[TopicPartition, int],
    *,
    is_tansu: bool,
    members_gone: bool = False,
) -> GroupState:
    """Set the group's offsets, refusing while it has members (see the module's doc for Tansu)."""
    state = await describe_group(bootstrap, group)
    if state.members:
        if not is_tansu:
            raise GroupActiveError(
                f"group {group!r} has {len(state.members)} active member(s) (state {state.state}): stop its "
                "workers first; a worker stopped just now leaves within its session timeout"
            )
        if not members_gone:
            raise GroupActiveError(
                f"group {group!r} lists {len(state.members)} member(s) (state {state.state}). The embedded "
                "broker (Tansu 0.6.0) never removes members that have stopped, so they may be gone: if every "
                "worker of the group is stopped, run again with --members-gone"
            )
        await _commit_as_member(bootstrap, group, state.members, offsets)
        return state
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(dict(offsets))
    finally:
        await consumer.stop()
    return state


async def _commit_as_member(
    bootstrap: str, group: str, members: Iterable[str], offsets: Mapping[TopicPartition, int]
) -> None:
    by_topic: dict[str, list[tuple[int, int, str]]] = {}
    for tp, offset in sorted(offsets.items()):
        by_topic.setdefault(tp.topic, []).append((tp.partition, offset, ""))
    topics = list(by_topic.items())
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        coordinator = await admin.find_coordinator(group)
        for member in members:
            for generation in range(MAX_GENERATION):
                request = OffsetCommitRequest(group, generation, member, -1, topics)
                response = await admin._send_request(request, coordinator)
                codes = {code for _topic, partitions in response.topics for _p, code in partitions}
                if codes == {0}:
                    return
                if codes == {UNKNOWN_MEMBER_ID}:
                    break
                if codes != {ILLEGAL_GENERATION}:
                    raise RuntimeError(f"committing offsets for group {group!r} failed: error codes {codes}")
    finally:
        await admin.close()
    raise RuntimeError(f"no generation of group {group!r} accepted the commit")
