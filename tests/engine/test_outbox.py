"""The engine's outbox follower: durable cursor moved only past delivered events, backoff,
one leader, a successor resumes where the cursor says."""

from __future__ import annotations

from runbooks.engine.background.outbox import OutboxFollower
from runbooks.engine.clock import FakeClock
from runbooks.engine.models import Event
from runbooks.engine.store.sqlite import SqliteStore


class Notes:
    """A consumer that delivers to a list, and can be told to fail."""

    def __init__(self, sent: list[int]) -> None:
        self.sent = sent
        self.pending: list[int] = []
        self.down = False

    def note(self, event: Event) -> None:
        self.pending.append(event.id)

    def flush(self) -> int | None:
        while self.pending and not self.down:
            event_id = self.pending.pop(0)
            if event_id not in self.sent:  # idempotent: a replay sends nothing twice
                self.sent.append(event_id)
        return self.pending[0] if self.pending else None

    def reset(self) -> None:
        self.pending = []


def test_the_cursor_waits_for_delivery_and_a_successor_picks_up(sqlite_store: SqliteStore):
    clock = FakeClock()
    store = sqlite_store
    sent: list[int] = []
    first_notes, second_notes = Notes(sent), Notes(sent)
    first = OutboxFollower(store, clock, first_notes, name="pd-notes", owner="bot-1")
    second = OutboxFollower(store, clock, second_notes, name="pd-notes", owner="bot-2")
    first.start_at_present()
    ids = [store.append_event("rb-1", "execution.state", {"n": i}, clock.now()) for i in range(3)]
    first_notes.down = True
    assert first.lead() and not second.lead()
    assert first.pass_once() == 3 and first.behind
    assert first.cursor() == ids[0] - 1 and sent == []
    first.failures = 3
    assert first.backoff() == 2.0  # 0.5, 1, 2, ... up to 30 s
    first.failures = 20
    assert first.backoff() == 30.0
    # bot-1 dies with the events noted but not delivered; after its lease, bot-2 leads.
    clock.advance(16)
    assert second.lead()
    second.pass_once()
    assert sent == ids and second.cursor() == ids[-1] and not second.behind
    assert not first.lead()  # the stale leader stays out
