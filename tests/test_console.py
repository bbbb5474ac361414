"""The progress display: rich bars on a terminal, throttled log lines elsewhere."""

from __future__ import annotations

import io
import time

from ferryman import MemoryStore, MigrationService, Retry, migration
from ferryman.console import ConsoleProgress, finished_line, format_duration, progress_line
from ferryman.dry_run import DRY_RUN_FOOTER
from ferryman.report import MigrationReport, MigrationState


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def service(n: int = 50, batch: int = 10):
    @migration(source="src", dest="dst", batch_size=batch, name="copy")
    class Copy:
        def transform(self, aggregates, record):
            return [dict(record)]

    return MigrationService([MemoryStore("src", records=[{"id": i} for i in range(n)]), MemoryStore("dst")], [Copy])


def test_durations():
    assert [format_duration(s) for s in (None, 0, 42.4, 187, 7500)] == ["-", "0s", "42s", "3m07s", "2h05m"]


def test_lines_describe_a_report():
    report = MigrationReport("m.Copy", "copy", "src", "dst", state=MigrationState.RUNNING, total=2000,
                             read=500, succeeded=498, failed=2, started_at=time.time() - 10)
    line = progress_line(report)
    assert line.startswith("copy: 500/2,000 read (25%), 498 migrated, 2 failed, 50/s, ETA 30s")
    report.state, report.finished_at = MigrationState.FAILED, report.started_at + 10
    assert finished_line(report).startswith("copy: failed in 10s - 498 migrated, 2 failed")


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    console = ConsoleProgress(out, interval=3600)
    svc = service()
    svc.add_observer(console)
    assert svc.run().ok and not console.fancy
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # started the run, started copy, finished copy: no progress line within the hour
    assert lines[0].endswith("run started: 1 migration(s): copy")
    assert lines[1].endswith("copy: started (src -> dst, 50 records)")
    assert "copy: completed in" in lines[2] and "50 migrated" in lines[2]
    assert all(line.startswith("[") for line in lines)


def test_plain_progress_lines_are_throttled():
    out = io.StringIO()
    console = ConsoleProgress(out, interval=0)
    svc = service(n=30, batch=10)
    svc.add_observer(console)
    svc.run()
    progress = [line for line in out.getvalue().splitlines() if " read" in line]
    assert len(progress) == 3  # one per page with interval 0
    out2 = io.StringIO()
    console2 = ConsoleProgress(out2, interval=60)
    svc2 = service(n=300, batch=10)
    svc2.add_observer(console2)
    svc2.run()
    assert not [line for line in out2.getvalue().splitlines() if " read" in line]


def test_bars_on_a_terminal():
    out = FakeTerminal()
    console = ConsoleProgress(out)
    assert console.fancy
    svc = service(n=100)
    svc.add_observer(console)
    assert svc.run().ok
    text = out.getvalue()
    assert "copy" in text and "100/100" in text and "completed" in text
    assert console._progress is None  # stopped at the end of the run
    console.close()  # idempotent


def test_bars_show_held_back_migrations():
    @migration(source="src", dest="mid", name="first")
    class First:
        def transform(self, aggregates, record):
            raise ValueError("no")

    @migration(source="mid", dest="dst", name="second")
    class Second:
        def transform(self, aggregates, record):
            return [record]

    svc = MigrationService([MemoryStore("src", records=[{"id": 1}]), MemoryStore("mid"), MemoryStore("dst")],
                           [First, Second])
    out = FakeTerminal()
    svc.add_observer(ConsoleProgress(out))
    result = svc.run()
    assert result.report("second").state is MigrationState.HELD_BACK
    assert "held back (first failed)" in out.getvalue()


def test_forced_plain_on_a_terminal():
    out = FakeTerminal()
    console = ConsoleProgress(out, fancy=False)
    svc = service(n=5)
    svc.add_observer(console)
    svc.run()
    assert "\x1b[" not in out.getvalue()


def dry_run_lines(fancy: bool) -> str:
    """A dry run of a migration with a failing record and a dependant, through the display."""
    @migration(source="src", dest="mid", name="first", batch_size=4, save_retry=Retry(times=0, delay=0))
    class First:
        def transform(self, aggregates, record):
            if record["id"] == 3:
                raise ValueError("no")
            return [dict(record)]

    @migration(source="mid", dest="dst", name="second")
    class Second:
        def transform(self, aggregates, record):
            return [record]

    svc = MigrationService([MemoryStore("src", records=[{"id": i} for i in range(1, 11)]), MemoryStore("mid"),
                            MemoryStore("dst")], [First, Second])
    out = FakeTerminal() if fancy else io.StringIO()
    svc.add_observer(ConsoleProgress(out, dry_run=True, interval=0))
    result = svc.dry_run()
    assert result.report("second").state is MigrationState.HELD_BACK
    return out.getvalue() + "\n" + result.summary()


def test_a_dry_run_says_what_it_would_do_and_never_that_it_completed_or_wrote():
    text = dry_run_lines(fancy=False)
    assert "first: dry run started, saving nothing (src -> mid, 10 records)" in text
    assert "first: 10/10 read (100%), 9 would migrate, 1 would fail, " in text
    assert "first: dry run over in 0s - would write 9 record(s) (9 would migrate, 1 would fail, 0 already " \
           "done, 0 ignored); nothing saved" in text
    assert "first: would write 9 record(s) to mid (10 read, 0 already done, 0 ignored, 1 would fail)" in text
    assert "second: not run: a run would hold it back (first would fail)" in text
    assert text.endswith("\ndry run: nothing was saved and no progress was written; what a destination would "
                         "refuse (a duplicate key, NOT NULL, another constraint) shows only in a real run")
    text = text.removesuffix(DRY_RUN_FOOTER)
    for claim in ("completed", "written", " migrated", " failed", "held back: first failed"):
        assert claim not in text, claim


def test_dry_run_bars_never_say_completed():
    text = dry_run_lines(fancy=True)
    assert "dry run: some would fail" in text and "held back (first would fail)" in text
    assert "completed" not in text and " failed" not in text
