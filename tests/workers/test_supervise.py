"""The supervised loop, the health record, the progress bar and the counters pattern."""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass

import pytest

from core.errors import OperationalError, TemporaryError
from workers.backoff import BackoffPolicy
from workers.errors import ErrorKind
from workers.progress import ProgressBar
from workers.stats import Counters
from workers.supervise import LoopHealth, sleep_or_stop, supervise

log = logging.getLogger("test.supervise")
FAST = BackoffPolicy(base_s=0.001, cap_s=0.002, max_attempts=None)


def fast(_exc: BaseException, _kind: ErrorKind) -> BackoffPolicy:
    return FAST


class Script:
    """A step that raises the scripted exceptions in turn, then succeeds."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0
        self.called = asyncio.Event()

    async def __call__(self) -> None:
        self.calls += 1
        self.called.set()
        if self.failures:
            raise self.failures.pop(0)


@pytest.mark.parametrize(
    ("failures", "kinds"),
    [
        ((), []),
        ((TemporaryError("blip"),), [ErrorKind.TEMPORARY]),
        ((ConnectionResetError(), OperationalError("auth")), [ErrorKind.TEMPORARY, ErrorKind.OPERATIONAL]),
    ],
)
async def test_expected_failures_are_retried_until_success(failures: tuple[BaseException, ...],
                                                          kinds: list[ErrorKind]) -> None:
    step = Script(*failures)
    seen: list[ErrorKind] = []
    health = LoopHealth("t")
    await supervise(step, name="t", log=log, policy_for=fast, once=True, health=health,
                    on_error=lambda _e, kind: seen.append(kind))
    assert step.calls == len(failures) + 1
    assert seen == kinds
    assert health.failures == len(failures)
    assert health.consecutive_failures == 0
    assert health.last_ok_monotonic is not None


@pytest.mark.parametrize("bug", [ValueError("x"), KeyError("k"), TypeError("t")])
async def test_a_bug_is_logged_and_re_raised(bug: Exception, caplog: pytest.LogCaptureFixture) -> None:
    step = Script(bug)
    with caplog.at_level(logging.ERROR, logger="test.supervise"), pytest.raises(type(bug)):
        await supervise(step, name="t", log=log, policy_for=fast)
    assert step.calls == 1
    assert "a bug" in caplog.text
    assert caplog.records[-1].exc_info is not None


async def test_bounded_policy_gives_up_after_max_attempts() -> None:
    step = Script(*(TemporaryError(f"n{i}") for i in range(10)))
    bounded = BackoffPolicy(base_s=0.001, cap_s=0.001, max_attempts=3)
    with pytest.raises(TemporaryError, match="n2"):
        await supervise(step, name="t", log=log, policy_for=lambda _e, _k: bounded)
    assert step.calls == 3


async def test_stop_ends_the_loop_during_a_backoff_and_between_steps() -> None:
    stop = asyncio.Event()
    step = Script(*(TemporaryError("down") for _ in range(1000)))
    slow = BackoffPolicy(base_s=60.0, cap_s=60.0, max_attempts=None)
    task = asyncio.create_task(supervise(step, name="t", log=log, policy_for=lambda _e, _k: slow, stop=stop))
    await step.called.wait()
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert step.calls == 1

    stop2 = asyncio.Event()
    ok = Script()
    task = asyncio.create_task(supervise(ok, name="t", log=log, interval_s=60.0, stop=stop2))
    await ok.called.wait()
    stop2.set()
    await asyncio.wait_for(task, timeout=5)
    assert ok.calls == 1


async def test_first_now_false_waits_an_interval_first() -> None:
    stop = asyncio.Event()
    stop.set()
    step = Script()
    await supervise(step, name="t", log=log, interval_s=60.0, first_now=False, stop=stop)
    assert step.calls == 0
    assert await sleep_or_stop(60.0, stop) is True


def test_health_silence_and_dict() -> None:
    health = LoopHealth("t")
    assert health.silent_for_s() is None
    health.failed(TemporaryError("x"), ErrorKind.TEMPORARY)
    health.beat()
    silent = health.silent_for_s()
    assert silent is not None
    assert silent >= 0
    assert health.as_dict()["last_error"] == "TemporaryError: x"
    assert health.as_dict()["failures"] == 1


@pytest.mark.parametrize(
    ("done", "expected"),
    [(0, "[" + "." * 30 + "]   0.0% 0 rows"), (50, "[" + "#" * 15 + "." * 15 + "]  50.0% 50 rows"),
     (500, "[" + "#" * 30 + "] 100.0% 500 rows")],
)
def test_progress_bar_draws_fraction_and_detail(done: int, expected: str) -> None:
    out = io.StringIO()
    bar = ProgressBar("dest", 100, out=out)
    bar.update(done, f"{done} rows")
    assert out.getvalue() == f"\rdest {expected}"
    bar.close("end")
    assert out.getvalue().endswith("] 100.0% end\n")


def test_disabled_progress_bar_draws_nothing() -> None:
    out = io.StringIO()
    bar = ProgressBar("dest", 10, out=out, enabled=False)
    bar.advance(5)
    bar.close()
    assert out.getvalue() == ""
    assert bar.done == 5


@dataclass(slots=True)
class _Example(Counters):
    rows: int = 0
    waited_s: float = 0.0
    last_error: str | None = None


def test_counters_render_fields_without_last_error() -> None:
    stats = _Example()
    stats.rows += 3
    stats.waited_s += 0.12349
    stats.last_error = "x"
    assert stats.as_dict() == {"rows": 3, "waited_s": 0.123}
    assert stats.as_dict(exclude=frozenset()) == {"rows": 3, "waited_s": 0.123, "last_error": "x"}
