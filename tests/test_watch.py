"""``stoic watch``'s watcher on a clock the test moves and a fake daemon: no sleeping.

The fake daemon keeps what the real one promises (tests/test_api.py checks the real
one): a repeated ``Idempotency-Key`` with the same files is the batch it stored, with
other files a 409; ``skip_invalid`` skips what is not a JPEG; a 4xx stores nothing.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stoic.clock import ManualClock
from stoic.errors import InputError, ServerError
from stoic.watch.cli import FileEvents, is_image_event
from stoic.watch.scan import deployment_label
from stoic.watch.state import WatchState
from stoic.watch.watcher import Submitted, Watcher, WatchOptions
from tests.support.images import camera_image, jpeg


@dataclass
class FakeDaemon:
    batches: dict[str, dict] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    down: bool = False
    lose_next_answer: bool = False
    refuse: Callable[[list[tuple[str, bytes]]], ServerError | None] | None = None
    finish: bool = True
    calls: int = 0
    _ids: itertools.count = field(default_factory=itertools.count)

    def submit(self, files: Sequence[tuple[str, Path]], *, deployment: str, key: str) -> Submitted:
        self.calls += 1
        if self.down:
            raise ServerError("cannot reach the daemon", status=None)
        sent = [(name, path.read_bytes()) for name, path in files]
        if self.refuse is not None and (error := self.refuse(sent)) is not None:
            raise error
        if key in self.by_key:
            b = self.batches[self.by_key[key]]
            if (b["files"], b["deployment"]) != (sent, deployment):
                raise ServerError("Idempotency-Key reused", status=409, code="idempotency")
            return Submitted(b["id"], b["skipped"])
        skipped = tuple((n, f"{n}: not an image") for n, d in sent if not d.startswith(b"\xff\xd8"))
        batch_id = f"batch-{next(self._ids)}"
        self.batches[batch_id] = {
            "id": batch_id,
            "files": sent,
            "deployment": deployment,
            "skipped": skipped,
            "state": "done" if self.finish else "running",
        }
        self.by_key[key] = batch_id
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise ServerError("the connection dropped", status=None)
        return Submitted(batch_id, skipped)

    def batch_state(self, batch_id: str) -> tuple[str, str | None]:
        if self.down:
            raise ServerError("cannot reach the daemon", status=None)
        return self.batches[batch_id]["state"], None

    def results(self, batch_id: str, fmt: str) -> bytes:
        return json.dumps({"batch": batch_id, "format": fmt}).encode()

    def labelled(self) -> Counter[tuple[str, str]]:
        """How many times each (deployment, name) was accepted as an image."""
        out: Counter[tuple[str, str]] = Counter()
        for b in self.batches.values():
            skipped = {n for n, _ in b["skipped"]}
            out.update((b["deployment"], n) for n, _ in b["files"] if n not in skipped)
        return out


class Rig:
    """A watcher over ``tmp/cards`` with a state file, on a clock the test moves."""

    def __init__(self, tmp: Path, daemon: FakeDaemon, **options: object) -> None:
        self.cards = tmp / "cards"
        self.cards.mkdir(exist_ok=True)
        self.t = 0.0
        self.daemon = daemon
        self.reports: list[str] = []
        defaults: dict[str, object] = {"every_s": 3600.0, "max_images": 100, "stable_s": 10.0}
        self.options = WatchOptions(roots=(self.cards,), **{**defaults, **options})  # type: ignore[arg-type]
        self.state = WatchState(tmp / "state.db").__enter__()
        self.watcher = self.restart()

    def restart(self) -> Watcher:
        """A new watcher on the same state file (what survives a kill -9)."""
        self.watcher = Watcher(
            self.options,
            self.state,
            self.daemon,
            clock=lambda: self.t,
            now=ManualClock(),
            report=self.reports.append,
        )
        return self.watcher

    def put(self, rel: str, data: bytes) -> Path:
        path = self.cards / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def at(self, t: float, *, flush: bool = False) -> None:
        self.t = t
        self.watcher.tick(flush=flush)

    def close(self) -> None:
        self.state.__exit__()


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """Rigs over ``tmp_path``, their state files closed at the end."""
    made: list[Rig] = []

    def make(daemon: FakeDaemon | None = None, **options: object) -> Rig:
        made.append(Rig(tmp_path, daemon or FakeDaemon(), **options))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig(every_s=0.0)


def test_a_file_is_sent_only_once_it_has_stopped_changing(rig: Rig) -> None:
    whole = camera_image(1)
    path = rig.put("cam01/IMG_0001.JPG", whole[:200])
    rig.at(0)
    rig.at(9)
    path.write_bytes(whole[:600])  # still being copied
    rig.at(12)
    rig.at(21.9)
    assert rig.daemon.calls == 0
    path.write_bytes(whole)
    rig.at(25)
    rig.at(34.9)
    assert rig.daemon.calls == 0
    rig.at(35)
    assert rig.daemon.labelled() == {("cam01", "IMG_0001.JPG"): 1}
    assert rig.daemon.batches["batch-0"]["files"] == [("IMG_0001.JPG", whole)]


def test_images_are_batched_per_deployment_by_size_and_period(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(every_s=3600.0, max_images=3, stable_s=0.0)
    for i in range(4):
        rig.put(f"cam01/100RECNX/IMG_{i:04d}.JPG", jpeg(i))
    rig.put("cam02/IMG_0001.JPG", jpeg(9))
    rig.at(0)
    # A full batch goes at once; the rest waits for the period.
    [first] = rig.daemon.batches.values()
    assert [n for n, _ in first["files"]] == [f"100RECNX/IMG_{i:04d}.JPG" for i in range(3)]
    assert first["deployment"] == "cam01"
    rig.at(3599)
    assert len(rig.daemon.batches) == 1
    rig.at(3600)
    assert sorted((b["deployment"], len(b["files"])) for b in rig.daemon.batches.values()) == [
        ("cam01", 1),
        ("cam01", 3),
        ("cam02", 1),
    ]
    rig.at(7200)
    assert sum(rig.daemon.labelled().values()) == 5 and len(rig.daemon.batches) == 3


def test_a_restart_before_the_send_sends_the_same_batch(rig: Rig) -> None:
    for i in range(3):
        rig.put(f"cam01/IMG_{i}.JPG", jpeg(i))
    rig.daemon.down = True
    rig.at(0)
    rig.at(10)  # planned and written down, not taken by the daemon
    assert rig.daemon.calls == 1 and not rig.daemon.batches
    assert any("trying again" in r for r in rig.reports)
    rig.put("cam01/IMG_9.JPG", jpeg(9))  # arrives while the watcher is down
    rig.restart()
    rig.daemon.down = False
    rig.at(20)
    [batch] = rig.daemon.batches.values()
    assert [n for n, _ in batch["files"]] == ["IMG_0.JPG", "IMG_1.JPG", "IMG_2.JPG"]
    rig.at(30)
    assert rig.daemon.labelled() == {("cam01", f"IMG_{i}.JPG"): 1 for i in (0, 1, 2, 9)}


def test_a_lost_answer_does_not_make_a_second_batch(rig: Rig) -> None:
    rig.put("cam01/a.jpg", jpeg(1))
    rig.daemon.lose_next_answer = True
    rig.at(0)
    rig.at(10)  # stored by the daemon, but the watcher never heard
    rig.restart()
    rig.at(11)  # sent again with the same key: the batch it stored
    assert len(rig.daemon.batches) == 1 and rig.daemon.calls == 2
    assert rig.state.counts() == {"done": 1}


def test_bad_files_are_reported_by_path_and_left_in_place(rig: Rig) -> None:
    good = rig.put("cam01/good.jpg", jpeg(1))
    bad = rig.put("cam01/bad.jpg", b"this is not a JPEG")
    rig.at(0)
    rig.at(10)
    assert [r for r in rig.reports if r.startswith("bad file")] == [
        f"bad file, left in place: {bad}: bad.jpg: not an image"
    ]
    assert bad.exists() and good.exists()
    assert rig.state.bad_files() == [(str(bad), "bad.jpg: not an image")]
    rig.at(100)
    assert rig.daemon.calls == 1  # not sent again...
    bad.write_bytes(jpeg(2))  # ...unless it is copied again
    rig.at(101)
    rig.at(111)
    assert rig.daemon.labelled() == {("cam01", "good.jpg"): 1, ("cam01", "bad.jpg"): 1}


def test_a_file_the_daemon_refuses_is_dropped_and_the_rest_sent(rig: Rig) -> None:
    def over_the_limit(sent: list[tuple[str, bytes]]) -> ServerError | None:
        if any(n == "huge.jpg" for n, _ in sent):
            return ServerError("HTTP 413 batch_too_large", status=413, file="huge.jpg")
        return None

    rig.daemon.refuse = over_the_limit
    huge = rig.put("cam01/huge.jpg", jpeg(1) + b"\0" * 1000)
    rig.put("cam01/ok.jpg", jpeg(2))
    rig.at(0)
    rig.at(10)
    assert rig.daemon.labelled() == {("cam01", "ok.jpg"): 1}
    assert any(r.startswith(f"bad file, left in place: {huge}: HTTP 413") for r in rig.reports)
    assert huge.exists()


def test_a_batch_over_the_daemons_limits_is_split(rig: Rig) -> None:
    rig.daemon.refuse = lambda sent: (
        ServerError("HTTP 413 batch_too_large", status=413) if len(sent) > 2 else None
    )
    for i in range(5):
        rig.put(f"cam01/{i}.jpg", jpeg(i))
    rig.at(0)
    rig.at(10)
    assert sorted(len(b["files"]) for b in rig.daemon.batches.values()) == [1, 2, 2]
    assert sum(rig.daemon.labelled().values()) == 5


@pytest.mark.parametrize(
    "error",
    [
        ServerError("HTTP 401 unauthorized", status=401, code="unauthorized"),
        ServerError("HTTP 404 not_found", status=404, code="not_found"),  # a wrong URL
        ServerError(
            "HTTP 422 invalid_field: unknown field 'deployment'", status=422, code="invalid_field"
        ),
    ],
)
def test_a_misconfigured_watcher_stops_and_sends_it_later(rig: Rig, error: ServerError) -> None:
    rig.daemon.refuse = lambda sent: error
    rig.put("cam01/a.jpg", jpeg())
    rig.at(0)
    with pytest.raises(ServerError) as stopped:
        rig.at(10)
    assert stopped.value is error
    assert rig.state.counts() == {"planned": 1}
    rig.daemon.refuse = None  # the configuration put right
    rig.restart()
    rig.at(11)
    assert rig.daemon.labelled() == {("cam01", "a.jpg"): 1}


def test_a_file_changed_after_it_was_planned_is_not_sent(rig: Rig) -> None:
    path = rig.put("cam01/a.jpg", jpeg(1))
    rig.daemon.down = True
    rig.at(0)
    rig.at(10)
    path.write_bytes(jpeg(2))
    rig.daemon.down = False
    rig.at(11)
    assert not rig.daemon.batches
    assert any(str(path) in r and "not sent" in r for r in rig.reports)


def test_results_go_beside_the_images_and_done_images_may_be_moved(
    tmp_path: Path, make_rig: Callable[..., Rig]
) -> None:
    done = tmp_path / "done"
    rig = make_rig(every_s=0.0, stable_s=0.0, move_done=done)
    rig.put("cam01/DCIM/a.jpg", jpeg(1))
    rig.put("cam01/b.jpg", b"not an image")
    rig.at(0)
    results = rig.cards / "cam01" / "stoic-batch-0.megadetector.json"
    assert json.loads(results.read_bytes()) == {"batch": "batch-0", "format": "megadetector"}
    assert (done / "cam01" / "DCIM" / "a.jpg").read_bytes() == jpeg(1)
    assert not (rig.cards / "cam01" / "DCIM" / "a.jpg").exists()
    assert (rig.cards / "cam01" / "b.jpg").exists()  # a bad file stays where it is
    assert rig.watcher.idle()
    rig.at(10)
    assert len(rig.daemon.batches) == 1


def test_results_may_go_under_out_in_another_format(
    tmp_path: Path, make_rig: Callable[..., Rig]
) -> None:
    rig = make_rig(every_s=0.0, stable_s=0.0, out=tmp_path / "out", results_format="csv")
    rig.put("a.jpg", jpeg(1))  # directly in the watched folder: its own deployment
    rig.at(0)
    assert (tmp_path / "out" / "cards" / "stoic-batch-0.csv").exists()
    assert rig.daemon.batches["batch-0"]["deployment"] == "cards"


def test_idle_means_nothing_waits_and_nothing_is_in_flight(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(FakeDaemon(finish=False), every_s=3600.0, stable_s=5.0)
    rig.put("cam01/a.jpg", jpeg(1))
    rig.at(0)
    assert not rig.watcher.idle()  # not stable yet
    rig.at(5, flush=True)
    assert not rig.watcher.idle()  # sent, not done
    rig.daemon.batches["batch-0"]["state"] = "done"
    rig.at(6, flush=True)
    assert rig.watcher.idle()


def test_the_state_file_admits_one_watcher(tmp_path: Path) -> None:
    with (
        WatchState(tmp_path / "s.db"),
        pytest.raises(InputError, match="in use by another stoic watch"),
    ):
        WatchState(tmp_path / "s.db").__enter__()
    with WatchState(tmp_path / "s.db"):
        pass


@pytest.mark.parametrize(
    ("folder", "label"),
    [("cam01", "cam01"), ("North ridge 2024", "North ridge 2024"), ("cam#1", "cam_1"),
     ("=SUM(A1)", "_SUM_A1_"), ("-x", "_-x"), ("Caméra 3", "Caméra 3")],
)  # fmt: skip
def test_folder_names_become_deployment_labels(folder: str, label: str) -> None:
    assert deployment_label(folder) == label


def test_only_image_files_are_events() -> None:
    assert is_image_event(None, "/cards/cam01/IMG_0001.JPG")
    for other in ("/cards/.stoic-watch.db-wal", "/cards/cam01/stoic-b.csv", "/cards/.tmp/a.jpg"):
        assert not is_image_event(None, other)


def test_file_events_wake_the_watcher_before_its_scan_period(tmp_path: Path) -> None:
    pytest.importorskip("watchfiles", reason="the watch extra (watchfiles) is not installed")
    stop = threading.Event()
    events = FileEvents([tmp_path], period_s=120.0, stop=stop)
    woke = threading.Event()

    def copy_images() -> None:
        for i in itertools.count():  # until seen: the watch starts with the first wait
            if woke.wait(0.2):
                return
            (tmp_path / f"IMG_{i}.JPG").write_bytes(jpeg(i))

    copier = threading.Thread(target=copy_images)
    copier.start()
    started = time.monotonic()
    try:
        events.wait()
    finally:
        woke.set()
        copier.join()
    assert time.monotonic() - started < 60  # an event, not the 120 s period
    threading.Timer(0.2, stop.set).start()
    events.wait()  # returns on stop


def test_results_that_cannot_be_written_are_tried_again(
    tmp_path: Path, make_rig: Callable[..., Rig]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "cam01").write_text("a file where the folder should be")
    rig = make_rig(every_s=0.0, stable_s=0.0, out=out)
    rig.put("cam01/a.jpg", jpeg(1))
    rig.at(0)
    assert any("cannot write the results of batch batch-0" in r for r in rig.reports)
    assert rig.state.counts() == {"sent": 1}
    (out / "cam01").unlink()
    rig.at(1)
    assert (out / "cam01" / "stoic-batch-0.megadetector.json").exists()
    assert rig.state.counts() == {"done": 1}


def test_the_key_is_the_file_set_so_a_lost_state_file_resends_nothing_new(
    tmp_path: Path, make_rig: Callable[..., Rig]
) -> None:
    daemon = FakeDaemon()
    first = make_rig(daemon, every_s=0.0, stable_s=0.0)
    for i in range(3):
        first.put(f"cam01/{i}.jpg", jpeg(i))
    first.at(0)
    first.close()
    (tmp_path / "state.db").unlink()  # the state file is lost
    second = make_rig(daemon, every_s=0.0, stable_s=0.0)
    second.at(1)
    assert len(daemon.batches) == 1 and daemon.calls == 2
    assert daemon.labelled() == {("cam01", f"{i}.jpg"): 1 for i in range(3)}


def test_a_batch_an_operator_cancelled_ends_the_wait(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(FakeDaemon(finish=False), every_s=0.0, stable_s=0.0)
    rig.put("cam01/a.jpg", jpeg(1))
    rig.at(0)
    assert not rig.watcher.idle()
    rig.daemon.batches["batch-0"]["state"] = "cancelled"
    rig.at(1)
    assert rig.watcher.idle()  # not polled forever
    assert rig.reports[-1].startswith("batch batch-0 failed in the daemon")
    assert (rig.cards / "cam01" / "a.jpg").exists()  # its images stay to be seen to
