"""The local executor's pipeline: groups solved ahead in threads, yielded in order, errors raised to the reader.

`solve_parts` is replaced by a fake that logs when each group starts and finishes, so the order of work is seen
without compiling anything."""

import threading

import pytest

import ltn.sweep._runner as runner
from ltn.sweep import LocalExecutor


@pytest.fixture
def fake_parts(monkeypatch):
    """Each group is a list of batch labels; solving logs ("start", group) and ("end", group) and yields
    `([label], {})` per batch. A group whose label is "boom" raises."""
    log, lock = [], threading.Lock()

    def solve_parts(group, shard=True):
        with lock:
            log.append(("start", group[0]))
        for label in group:
            if label == "boom":
                raise RuntimeError("solve failed")
            yield [label], {}
        with lock:
            log.append(("end", group[0]))

    monkeypatch.setattr(runner, "solve_parts", solve_parts)
    return log


def started(log, group: str) -> bool:
    """Whether `group` logged its start within 2 s (a thread solving it ahead starts with the group before)."""
    for _ in range(200):
        if ("start", group) in log:
            return True
        threading.Event().wait(0.01)  # never set: a sleep
    return False


GROUPS = [["a1", "a2"], ["b1"], ["c1", "c2", "c3"]]
IN_ORDER = [(0, ["a1"], {}), (0, ["a2"], {}), (1, ["b1"], {}), (2, ["c1"], {}), (2, ["c2"], {}), (2, ["c3"], {})]


@pytest.mark.parametrize("ahead", [0, 1, 2])
def test_batches_come_in_the_order_of_the_groups(fake_parts, ahead):
    assert list(LocalExecutor(ahead=ahead).run(GROUPS)) == IN_ORDER


def test_the_next_group_is_solved_while_this_one_is_read(fake_parts):
    batches = LocalExecutor(ahead=1).run(GROUPS)
    assert next(batches) == IN_ORDER[0]
    assert started(fake_parts, "b1")  # before group 0 was read to its end
    assert ("start", "c1") not in fake_parts  # one group ahead, not two
    assert list(batches) == IN_ORDER[1:]


def test_the_default_on_the_cpu_is_one_group_ahead(fake_parts):
    batches = LocalExecutor().run(GROUPS)
    next(batches)
    assert started(fake_parts, "b1") and ("start", "c1") not in fake_parts
    list(batches)


def test_without_ahead_one_group_at_a_time(fake_parts):
    batches = LocalExecutor(ahead=0).run(GROUPS)
    next(batches)
    assert ("start", "b1") not in fake_parts
    list(batches)
    assert fake_parts == [(kind, group) for group in ("a1", "b1", "c1") for kind in ("start", "end")]


def test_an_error_in_a_group_solved_ahead_reaches_the_reader_in_its_turn(fake_parts):
    batches = LocalExecutor(ahead=1).run([["a1"], ["boom"], ["c1"]])
    assert next(batches) == (0, ["a1"], {})
    with pytest.raises(RuntimeError, match="solve failed"):
        next(batches)
