"""The persistent store on SQLite (a temp file) and on a real PostgreSQL cluster.

Every test taking ``store`` or ``url`` runs once per backend. The PostgreSQL cluster
is private to this module (``tests/support/pg.py``): started once, one fresh database per
test, stopped at the end. It is skipped only where no ``initdb`` is installed.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from stoic.errors import BatchNotFound, BatchStateError, RuntimeNotFound, StoreError
from stoic.store import Store, current_revision, head_revision, migrate
from stoic.store.lease import Lease, Leases, Taken
from stoic.store.migrate import alembic_config
from stoic.store.tables import Base
from stoic.values import (
    BatchState,
    Component,
    DeploymentSample,
    DeployOutcome,
    Estimate,
    Mode,
    ProcessingSample,
    Runtime,
    RuntimeKind,
    TransferSample,
)
from tests.support.pg import PgCluster, find_pg_bin

# Fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgCluster]:
    bindir = find_pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine")
    with PgCluster(bindir) as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sub' / 'stoic.db'}"
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.new_database()


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    migrate(url)
    s = Store(url)
    yield s
    s.close()


def new_batch(store: Store, at: float, **kw):
    fields: dict[str, Any] = {
        "n_images": 10,
        "n_bytes": 2_000_000,
        "package_key": f"packages/{at}.tar",
    }
    fields.update(kw)
    return store.create_batch(created_at=at, **fields)


def claim(store: Store, now: float):
    b = store.claim_next_queued(now)
    assert b is not None
    return b


# Migrations ----------------------------------------------------------------------------


def test_migrated_schema_matches_models(url: str) -> None:
    migrate(url)
    migrate(url)  # idempotent at head
    assert current_revision(url) == head_revision()
    s = Store(url)
    try:
        with s.engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == []
    finally:
        s.close()


def test_downgrade_to_base_and_back(url: str) -> None:
    migrate(url)
    s = Store(url)
    try:
        with s.engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert current_revision(s.engine) is None
        with s.engine.connect() as conn:
            tables = set(Base.metadata.tables)
            present = {name for name in tables if conn.dialect.has_table(conn, name)}
        assert present == set()
        migrate(s.engine)
        assert current_revision(s.engine) == head_revision()
    finally:
        s.close()


def test_warm_pod_seconds_are_a_cause_of_cloud_usage_from_0007(url: str) -> None:
    migrate(url, "0006")
    with Store(url) as s:
        with pytest.raises(StoreError):
            s.add_cloud_usage(0.0, "gpu1", "warm", 1.0)  # 0006's CHECK knows no "warm"
        migrate(s.engine)
        s.add_cloud_usage(0.0, "gpu1", "warm", 12.5)
        s.add_cloud_usage(0.0, "gpu1", "warm", 7.5)
        assert [(u.runtime, u.cause, u.seconds) for u in s.cloud_usage_on(0.0)] == [
            ("gpu1", "warm", 20.0)
        ]


def test_in_memory_sqlite_migrates_through_the_engine() -> None:
    with Store("sqlite://") as s:
        migrate(s.engine)
        new_batch(s, 1.0)
        assert s.count_batches() == 1


def test_database_errors_become_store_errors_without_password() -> None:
    s = Store("postgresql+psycopg://stoic:secret@127.0.0.1:1/nothing")
    try:
        with pytest.raises(StoreError) as exc:
            s.count_batches()
        assert "secret" not in str(exc.value)
        assert "127.0.0.1:1" in str(exc.value)
    finally:
        s.close()


def test_sqlite_pragmas(tmp_path) -> None:
    s = Store(f"sqlite:///{tmp_path / 'p.db'}", busy_timeout_s=2.5)
    with s, s.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 2500


# Runtimes ------------------------------------------------------------------------------

RUNTIMES = [
    Runtime("edge", RuntimeKind.EDGE),
    Runtime("cpu", RuntimeKind.CPU, backend="kubernetes"),
    Runtime("gpu1", RuntimeKind.GPU, gpus=1, backend="kubernetes"),
]


def test_runtimes_upsert_and_availability(store: Store) -> None:
    store.upsert_runtimes(RUNTIMES, at=10.0)
    rows = {r.name: r for r in store.runtimes()}
    assert [r.name for r in store.runtimes()] == ["cpu", "edge", "gpu1"]
    assert rows["gpu1"].runtime == RUNTIMES[2]
    assert all(r.available and r.unavailable_since is None for r in rows.values())

    down = store.set_availability("gpu1", False, at=20.0)
    assert (down.available, down.unavailable_since, down.updated_at) == (False, 20.0, 20.0)
    # A second failing probe does not move the instant it went down.
    again = store.set_availability("gpu1", False, at=80.0)
    assert (again.unavailable_since, again.updated_at) == (20.0, 80.0)

    # Re-upserting (daemon restart) keeps availability; a changed backend is updated.
    store.upsert_runtimes([*RUNTIMES[:2], Runtime("gpu1", RuntimeKind.GPU, 1, "simulated")])
    gpu1 = {r.name: r for r in store.runtimes()}["gpu1"]
    assert (gpu1.available, gpu1.unavailable_since, gpu1.backend) == (False, 20.0, "simulated")

    up = store.set_availability("gpu1", True, at=90.0)
    assert (up.available, up.unavailable_since) == (True, None)

    with pytest.raises(RuntimeNotFound, match="gpu9"):
        store.set_availability("gpu9", True, at=1.0)


def test_upsert_prune_removes_unconfigured_runtimes(store: Store) -> None:
    store.upsert_runtimes(RUNTIMES)
    store.add_deployment_sample(DeploymentSample("gpu1", 1.0, 30.0))
    store.upsert_runtimes(RUNTIMES[:2], prune=True)
    assert [r.name for r in store.runtimes()] == ["cpu", "edge"]
    assert store.count_deployment_samples("gpu1") == 1  # history outlives the runtime


# Samples -------------------------------------------------------------------------------


def test_deployment_samples_most_recent_oldest_first(store: Store) -> None:
    # Inserted out of order; two share an instant (insertion order breaks the tie).
    for at, d in [(5.0, 50.0), (1.0, 10.0), (3.0, 30.0), (4.0, 40.0), (4.0, 41.0)]:
        store.add_deployment_sample(DeploymentSample("gpu1", at, d))
    store.add_deployment_sample(DeploymentSample("gpu1", 6.0, 600.0, DeployOutcome.TIMEOUT))
    store.add_deployment_sample(DeploymentSample("cpu", 2.0, 7.5))

    last3 = store.deployment_samples("gpu1", limit=3)
    assert [(s.at, s.duration_s) for s in last3] == [(4.0, 41.0), (5.0, 50.0), (6.0, 600.0)]
    assert last3[-1].outcome is DeployOutcome.TIMEOUT
    assert [s.duration_s for s in store.deployment_samples("gpu1")] == [
        10.0, 30.0, 40.0, 41.0, 50.0, 600.0,
    ]  # fmt: skip
    assert store.deployment_samples("cpu") == [DeploymentSample("cpu", 2.0, 7.5)]
    assert store.deployment_samples("gpu2") == []
    assert store.count_deployment_samples() == 7
    assert store.count_deployment_samples("gpu1") == 6


def test_processing_samples_filter_by_app_version_runtime(store: Store) -> None:
    t0 = 1_700_000_000.123456  # epoch seconds survive the round trip exactly
    samples = [
        ProcessingSample("classify", "1", "edge", 10, 2_000_000, 37.55, t0 + i) for i in range(5)
    ]
    store.add_samples(samples)
    store.add_processing_sample(ProcessingSample("classify", "2", "edge", 5, 1, 1.0, t0 + 9))
    store.add_processing_sample(ProcessingSample("classify", "1", "gpu1", 5, 1, 2.0, t0 + 9))
    store.add_processing_sample(ProcessingSample("train", "1", "edge", 5, 1, 3.0, t0 + 9))

    assert store.processing_samples("classify", "1", "edge") == samples
    assert store.processing_samples("classify", "1", "edge", limit=2) == samples[-2:]
    assert store.count_processing_samples("classify", "1", "edge") == 5
    assert store.count_processing_samples(runtime="edge") == 7
    assert store.count_processing_samples() == 8
    big = ProcessingSample("classify", "1", "gpu2", 5000, 6 * 1024**3, 1.0, t0)
    store.add_processing_sample(big)  # n_bytes beyond 32 bits
    assert store.processing_samples("classify", "1", "gpu2") == [big]


def test_transfer_samples(store: Store) -> None:
    store.add_samples(
        [
            TransferSample(1_000_000, 0.2, 3.0, "gpu1"),
            TransferSample(2_000_000, 0.4, 1.0, "cpu"),
            TransferSample(3_000_000, 0.3, 2.0, "gpu1"),
        ]
    )
    assert [s.at for s in store.transfer_samples()] == [1.0, 2.0, 3.0]
    assert store.transfer_samples(limit=1) == [TransferSample(1_000_000, 0.2, 3.0, "gpu1")]
    assert [s.n_bytes for s in store.transfer_samples(runtime="gpu1")] == [3_000_000, 1_000_000]
    assert store.count_transfer_samples() == 3
    assert store.add_samples([]) == 0


def test_samples_between_every_runtime_in_a_half_open_period(store: Store) -> None:
    dep = [
        DeploymentSample("gpu1", 5.0, 30.0),
        DeploymentSample("cpu", 1.0, 600.0, DeployOutcome.TIMEOUT),
        DeploymentSample("gpu2", 9.0, 20.0),
    ]
    proc = [ProcessingSample("classify", "1", "edge", 3, 600_000, 9.0, 2.0)]
    trans = [TransferSample(1_000, 0.1, 4.0, "gpu1"), TransferSample(2_000, 0.1, 8.0, "cpu")]
    store.add_samples([*dep, *proc, *trans])
    d, p, t = store.samples_between()
    assert d == [dep[1], dep[0], dep[2]] and p == proc and t == trans
    d, p, t = store.samples_between(2.0, 8.0)
    assert (d, p, t) == ([dep[0]], proc, [trans[0]])
    assert store.samples_between(until=1.0) == ([], [], [])


# Batches -------------------------------------------------------------------------------


def test_create_and_get_batch(store: Store) -> None:
    skipped = [{"name": "notes.txt", "reason": "not an image"}]
    b = new_batch(
        store,
        100.0,
        app="classify",
        app_version="3",
        mode=Mode.DUPLICATOR,
        pinned_runtime="gpu2",
        skipped=skipped,
        n_bytes=5 * 1024**3,
    )
    assert b.is_new and b.state is BatchState.QUEUED and b.attempts == 0
    got = store.get_batch(b.id)
    assert got == dataclasses.replace(b, is_new=False)
    assert (got.mode, got.pinned_runtime, got.app_version) == (Mode.DUPLICATOR, "gpu2", "3")
    assert got.skipped == ({"name": "notes.txt", "reason": "not an image"},)
    assert got.n_bytes == 5 * 1024**3
    assert (got.created_at, got.updated_at, got.started_at, got.finished_at) == (
        100.0, 100.0, None, None,
    )  # fmt: skip
    assert got.estimates == {} and got.chosen_runtime is None and got.total_s is None
    job = got.job()
    assert (job.batch_id, job.n_images, job.package_key) == (b.id, 10, "packages/100.0.tar")

    with pytest.raises(BatchNotFound, match="nope"):
        store.get_batch("nope")


def test_idempotency_key_returns_the_existing_batch(store: Store) -> None:
    first = new_batch(store, 1.0, idempotency_key="upload-42")
    again = new_batch(store, 2.0, idempotency_key="upload-42", n_images=99)
    assert first.is_new and not again.is_new
    assert again.id == first.id and again.n_images == 10 and again.created_at == 1.0
    assert store.find_by_idempotency_key("upload-42") == again
    assert store.find_by_idempotency_key("other") is None
    # Batches without a key never collide.
    assert new_batch(store, 3.0).is_new and new_batch(store, 4.0).is_new
    assert store.count_batches() == 3


def test_idempotency_key_under_concurrent_creates(store: Store) -> None:
    n = 4
    barrier = threading.Barrier(n)
    results = []
    lock = threading.Lock()

    def create() -> None:
        barrier.wait()
        r = new_batch(store, 1.0, idempotency_key="same")
        with lock:
            results.append(r)

    threads = [threading.Thread(target=create) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == n
    assert len({r.id for r in results}) == 1
    assert sum(r.is_new for r in results) == 1
    assert store.count_batches() == 1


def test_state_machine_queued_running_done(store: Store) -> None:
    b = new_batch(store, 1.0)
    with pytest.raises(BatchStateError) as exc:
        store.finish_batch(b.id, state=BatchState.DONE, finished_at=2.0)
    assert (exc.value.batch_id, exc.value.state) == (b.id, "queued")
    assert b.id in str(exc.value) and "'queued'" in str(exc.value) and "'running'" in str(exc.value)
    with pytest.raises(BatchStateError):
        store.record_decision(b.id, "gpu1", "cheapest", {})

    running = claim(store, 5.0)
    assert (running.id, running.state, running.attempts, running.started_at) == (
        b.id, BatchState.RUNNING, 1, 5.0,
    )  # fmt: skip
    edge = Estimate("edge", Component(0.0), Component(0.0), Component(37.5, 2.0))
    estimates: dict[str, Estimate | Mapping[str, float]] = {
        "edge": edge,
        "gpu1": {"transfer_s": 0.25, "deployment_s": 30.0, "processing_s": 31.4, "total_s": 61.65},
    }
    decided = store.record_decision(b.id, "edge", "smallest T_s", estimates, at=5.5)
    assert decided.chosen_runtime == "edge" and decided.decision_reason == "smallest T_s"
    assert decided.estimates["edge"] == edge.as_dict()
    assert decided.estimates["gpu1"]["total_s"] == 61.65
    assert decided.updated_at == 5.5

    done = store.finish_batch(
        b.id,
        state=BatchState.DONE,
        finished_at=45.0,
        transfer_s=0.0,
        deployment_s=0.0,
        processing_s=39.0,
        total_s=40.0,
        winner="edge",
        cloud_used_s=12.0,
        cloud_wasted_s=12.0,
        results_key="results/x.json",
    )
    assert done.state is BatchState.DONE
    assert (done.total_s, done.winner, done.results_key, done.finished_at) == (
        40.0, "edge", "results/x.json", 45.0,
    )  # fmt: skip
    assert store.get_batch(b.id) == done

    # Finishing twice, or going back to running, is refused and changes nothing.
    with pytest.raises(BatchStateError, match="'done'"):
        store.finish_batch(b.id, state=BatchState.FAILED, finished_at=50.0, error="late")
    assert store.claim_next_queued(60.0) is None
    with pytest.raises(BatchStateError):
        store.record_decision(b.id, "gpu1", "late", {})
    assert store.get_batch(b.id) == done


def test_failed_batch_and_bad_finish_state(store: Store) -> None:
    b = new_batch(store, 1.0)
    claim(store, 2.0)
    with pytest.raises(ValueError, match="done"):
        store.finish_batch(b.id, state=BatchState.QUEUED, finished_at=3.0)
    failed = store.finish_batch(
        b.id, state=BatchState.FAILED, finished_at=3.0, error="DeployTimeout: gpu1"
    )
    assert (failed.state, failed.error) == (BatchState.FAILED, "DeployTimeout: gpu1")
    with pytest.raises(BatchStateError):
        store.finish_batch(b.id, state=BatchState.DONE, finished_at=4.0)
    with pytest.raises(BatchNotFound):
        store.finish_batch("missing", state=BatchState.DONE, finished_at=4.0)


def test_claim_takes_oldest_first_and_returns_none_when_empty(store: Store) -> None:
    assert store.claim_next_queued(1.0) is None
    late = new_batch(store, 20.0)
    early = new_batch(store, 10.0)
    assert claim(store, 30.0).id == early.id
    assert claim(store, 31.0).id == late.id
    assert store.claim_next_queued(32.0) is None


def test_two_claimers_never_claim_the_same_batch(store: Store) -> None:
    n_batches, n_threads = 24, 4
    ids = {new_batch(store, float(i)).id for i in range(n_batches)}
    barrier = threading.Barrier(n_threads)
    claimed: list[list[str]] = [[] for _ in range(n_threads)]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            barrier.wait()
            while (b := store.claim_next_queued(100.0 + k)) is not None:
                claimed[k].append(b.id)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    flat = [i for c in claimed for i in c]
    assert len(flat) == len(set(flat)) == n_batches
    assert set(flat) == ids
    assert {b.attempts for b in store.list_batches(limit=100)} == {1}
    assert store.count_batches(BatchState.RUNNING) == n_batches


@pytest.mark.postgres
@pytest.mark.timeout(60)  # a regression would wait on the lock
def test_postgres_claim_skips_a_locked_row(pg_cluster: PgCluster) -> None:
    url = pg_cluster.new_database()
    migrate(url)
    with Store(url) as s:
        first = new_batch(s, 1.0)
        second = new_batch(s, 2.0)
        # Another claimer holds the oldest row: we get the next one at once, not a wait.
        with s.engine.connect() as other, other.begin():
            other.execute(
                text("SELECT id FROM batches WHERE id = :id FOR UPDATE"), {"id": first.id}
            )
            got = s.claim_next_queued(3.0)
        assert got is not None and got.id == second.id
        assert claim(s, 4.0).id == first.id


def test_requeue_running_for_crash_recovery(store: Store) -> None:
    done = new_batch(store, 1.0)
    crashed = new_batch(store, 2.0)
    waiting = new_batch(store, 3.0)
    claim(store, 10.0)
    store.finish_batch(done.id, state=BatchState.DONE, finished_at=11.0)
    claim(store, 12.0)
    store.record_decision(crashed.id, "gpu1", "fastest", {"gpu1": {"total_s": 9.0}})

    assert store.requeue_running(100.0) == [crashed.id]
    again = store.get_batch(crashed.id)
    assert (again.state, again.attempts, again.updated_at) == (BatchState.QUEUED, 1, 100.0)
    assert (again.chosen_runtime, again.estimates, again.started_at) == (None, {}, None)
    assert store.get_batch(done.id).state is BatchState.DONE
    assert store.get_batch(waiting.id).state is BatchState.QUEUED
    # The old owner, if it still tried, could not finish it now.
    with pytest.raises(BatchStateError):
        store.finish_batch(crashed.id, state=BatchState.DONE, finished_at=101.0)

    reclaimed = claim(store, 110.0)
    assert (reclaimed.id, reclaimed.attempts) == (crashed.id, 2)
    assert store.requeue_running(120.0) == [crashed.id]
    assert store.requeue_running(121.0) == []


def test_only_a_run_that_ended_without_progress_counts_as_an_attempt(store: Store) -> None:
    b = new_batch(store, 1.0)
    # A drain hands the batch back: decided afresh, and the run is not counted.
    claim(store, 10.0)
    store.record_decision(b.id, "gpu1", "fastest", {"gpu1": {"total_s": 9.0}})
    back = store.release_claim(b.id, 11.0)
    assert (back.state, back.attempts, back.started_at) == (BatchState.QUEUED, 0, None)
    assert (back.chosen_runtime, back.decision_reason, back.estimates) == (None, None, {})
    # Crashes after progress (a share run stored chunks): never counted, never given up.
    for i in range(5):
        assert claim(store, 20.0 + i).attempts == 1
        assert [r.id for r in store.running_batches()] == [b.id]
        assert store.requeue_running(30.0 + i, max_attempts=2, progressed={b.id}) == [b.id]
        assert store.get_batch(b.id).attempts == 0
    # Crashes without progress count: the second gives up (max_attempts = 2).
    claim(store, 40.0)
    assert store.requeue_running(41.0, max_attempts=2, progressed={"another"}) == [b.id]
    claim(store, 42.0)
    assert store.requeue_running(43.0, max_attempts=2) == []
    failed = store.get_batch(b.id)
    assert (failed.state, failed.attempts) == (BatchState.FAILED, 2)
    assert "gave up after 2 attempt(s)" in (failed.error or "")
    assert store.running_batches() == []


def test_requeue_gives_up_after_max_attempts(store: Store) -> None:
    b = new_batch(store, 1.0)
    for i in range(3):
        claim(store, 10.0 + i)
        if i < 2:
            assert store.requeue_running(20.0 + i, max_attempts=3) == [b.id]
    assert store.requeue_running(30.0, max_attempts=3) == []
    failed = store.get_batch(b.id)
    assert (failed.state, failed.attempts, failed.finished_at) == (BatchState.FAILED, 3, 30.0)
    assert failed.error is not None and "3 attempt" in failed.error


def test_delete_batch(store: Store) -> None:
    queued = new_batch(store, 1.0, idempotency_key="k")
    store.delete_batch(queued.id)
    with pytest.raises(BatchNotFound):
        store.get_batch(queued.id)
    assert new_batch(store, 2.0, idempotency_key="k").is_new  # the key is free again

    running = claim(store, 3.0)
    with pytest.raises(BatchStateError, match="'running'"):
        store.delete_batch(running.id)
    store.finish_batch(running.id, state=BatchState.FAILED, finished_at=4.0)
    store.delete_batch(running.id)
    with pytest.raises(BatchNotFound):
        store.delete_batch(running.id)


def test_list_and_count_batches(store: Store) -> None:
    ids = [new_batch(store, float(i)).id for i in range(5)]
    claim(store, 10.0)  # ids[0]
    assert [b.id for b in store.list_batches()] == ids[::-1]
    assert [b.id for b in store.list_batches(limit=2)] == [ids[4], ids[3]]
    assert [b.id for b in store.list_batches(BatchState.RUNNING)] == [ids[0]]
    assert [b.id for b in store.list_batches(BatchState.QUEUED, limit=10)] == ids[:0:-1]
    assert store.list_batches(BatchState.DONE) == []
    assert store.count_batches() == 5
    assert store.count_batches(BatchState.QUEUED) == 4


def _finish(store: Store, at: float, runtime: str, *, state=BatchState.DONE, **kw):
    """A batch created at ``at``, decided for ``runtime`` and finished a second later."""
    b = new_batch(store, at)
    claim(store, at)
    store.record_decision(
        b.id, runtime, "test", {runtime: {"total_s": 10.0 + at, "processing_s": 10.0}}
    )
    fields: dict[str, Any] = (
        {"total_s": 12.0, "winner": runtime} if state is BatchState.DONE else {}
    )
    fields.update(kw)
    return store.finish_batch(b.id, state=state, finished_at=at + 1, **fields)


def test_batch_counts_every_state_in_one_query(store: Store) -> None:
    assert store.batch_counts() == dict.fromkeys(BatchState, 0)
    _finish(store, 1.0, "edge")
    for i in range(3):
        new_batch(store, 2.0 + i)
    claim(store, 5.0)
    assert store.batch_counts() == {
        BatchState.QUEUED: 2,
        BatchState.RUNNING: 1,
        BatchState.DONE: 1,
        BatchState.FAILED: 0,
        BatchState.CANCELLED: 0,
    }


def test_recent_outcomes_predicted_for_the_result_runtime(store: Store) -> None:
    _finish(store, 100.0, "gpu1")
    # The duplicator planned gpu1 but the edge won: the edge's estimate is compared.
    b = new_batch(store, 200.0)
    claim(store, 200.0)
    store.record_decision(
        b.id, "gpu1", "duplicator", {"gpu1": {"total_s": 50.0}, "edge": {"total_s": 30.0}}
    )
    store.finish_batch(b.id, state=BatchState.DONE, finished_at=240.0, total_s=35.0, winner="edge")
    _finish(store, 300.0, "cpu", state=BatchState.FAILED, error="boom")  # not an outcome
    new_batch(store, 400.0)  # queued: not an outcome
    outcomes = store.recent_outcomes()
    assert [(o.runtime, o.finished_at, o.predicted_s, o.actual_s) for o in outcomes] == [
        ("gpu1", 101.0, 110.0, 12.0),
        ("edge", 240.0, 30.0, 35.0),
    ]
    assert [o.runtime for o in store.recent_outcomes(limit=1)] == ["edge"]


def test_usage_since_groups_cloud_seconds_by_planned_runtime(store: Store) -> None:
    _finish(store, 50.0, "gpu1", cloud_used_s=99.0)  # before "since": not counted
    _finish(store, 100.0, "gpu1", cloud_used_s=40.0, cloud_wasted_s=0.0)
    _finish(store, 110.0, "gpu1", cloud_used_s=20.0, cloud_wasted_s=5.0)
    _finish(store, 120.0, "edge")
    _finish(store, 130.0, "cpu", state=BatchState.FAILED, error="boom")
    new_batch(store, 140.0)  # queued: not finished (created last, so never claimed here)
    rows = {(r.chosen_runtime, r.winner, r.state): r for r in store.usage_since(100.0)}
    assert set(rows) == {
        ("gpu1", "gpu1", BatchState.DONE),
        ("edge", "edge", BatchState.DONE),
        ("cpu", None, BatchState.FAILED),
    }
    gpu1 = rows["gpu1", "gpu1", BatchState.DONE]
    assert (gpu1.batches, gpu1.cloud_used_s, gpu1.cloud_wasted_s) == (2, 60.0, 5.0)
    edge = rows["edge", "edge", BatchState.DONE]
    assert (edge.batches, edge.cloud_used_s, edge.cloud_wasted_s) == (1, 0.0, 0.0)
    assert store.usage_since(1000.0) == []


def test_release_claim_hands_a_batch_back_without_counting_the_attempt(store: Store) -> None:
    b = new_batch(store, 1.0)
    claimed = claim(store, 2.0)
    assert claimed.attempts == 1
    back = store.release_claim(b.id, 3.0)
    assert (back.state, back.attempts, back.started_at) == (BatchState.QUEUED, 0, None)
    assert claim(store, 4.0).id == b.id
    store.finish_batch(b.id, state=BatchState.DONE, finished_at=5.0)
    with pytest.raises(BatchStateError):
        store.release_claim(b.id, 6.0)


def test_request_digest_is_stored_with_the_batch(store: Store) -> None:
    b = new_batch(store, 1.0, idempotency_key="k1", request_digest="a" * 64)
    assert b.request_digest == "a" * 64
    again = new_batch(store, 2.0, idempotency_key="k1", request_digest="b" * 64)
    assert not again.is_new and again.request_digest == "a" * 64  # the caller compares
    assert store.find_by_idempotency_key("k1") == again
    assert new_batch(store, 3.0).request_digest is None


def test_upgrade_0001_to_head_keeps_batches(url: str) -> None:
    """A database of the previous release: its batches have no digest, and a repeated
    key still finds them (the ingest then takes the request as the same)."""
    migrate(url, "0001")
    s = Store(url)
    try:
        with s.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO batches (id, created_at, updated_at, idempotency_key, "
                    "n_images, n_bytes, app, app_version, mode, package_key, state, attempts, "
                    "skipped) VALUES ('old', 1.0, 1.0, 'k-old', 3, 300, 'classify', '1', "
                    "'selector', 'batches/old/package.tar', 'queued', 0, '[]')"
                )
            )
        migrate(s.engine)
        assert current_revision(s.engine) == head_revision() == "0007"
        old = s.find_by_idempotency_key("k-old")
        assert old is not None and old.request_digest is None and old.n_images == 3
        assert claim(s, 2.0).id == "old"
    finally:
        s.close()


# Leases (one daemon per database; stoic.daemon.lease) -----------------------------------


def _holder(name: str, expires_at: float = 100.0) -> Lease:
    return Lease("controller", name, "host", 1, f"/data/{name}", 0.0, 0.0, expires_at)


def test_a_lease_is_taken_renewed_and_released_by_its_holder_only(store: Store) -> None:
    leases = Leases(store)
    assert leases.take(_holder("a"), stale=lambda _: False) == Taken(True, None)
    assert leases.take(_holder("a"), stale=lambda _: False).won  # ours already
    assert leases.take(_holder("b"), stale=lambda _: False) == Taken(False, _holder("a"))
    assert leases.renew("controller", "a", renewed_at=5.0, expires_at=200.0)
    assert not leases.renew("controller", "b", renewed_at=5.0, expires_at=200.0)
    renewed = dataclasses.replace(_holder("a"), renewed_at=5.0, expires_at=200.0)
    assert leases.take(_holder("b"), stale=lambda held: held == renewed) == Taken(True, renewed)
    leases.release("controller", "a")  # not a's any more: a no-op
    assert leases.get("controller") == _holder("b")
    leases.release("controller", "b")
    assert leases.get("controller") is None


def test_two_daemons_taking_a_free_lease_at_once_one_wins(url: str) -> None:
    migrate(url)
    stores = [Store(url), Store(url)]
    barrier = threading.Barrier(2)

    def take(i: int) -> bool:
        barrier.wait()
        return Leases(stores[i]).take(_holder(f"d{i}"), stale=lambda _: False).won

    try:
        with ThreadPoolExecutor(2) as pool:
            won = list(pool.map(take, range(2)))
        assert sorted(won) == [False, True]
    finally:
        for s in stores:
            s.close()


# Operator actions ----------------------------------------------------------------------


def test_cancel_ends_a_queued_or_running_batch_and_recovery_leaves_it(store: Store) -> None:
    queued = new_batch(store, 1.0)
    running = new_batch(store, 2.0)
    done = new_batch(store, 3.0)
    store.claim_next_queued(4.0)  # queued: the oldest
    assert claim(store, 4.0).id == running.id
    assert claim(store, 4.0).id == done.id
    store.finish_batch(done.id, state=BatchState.DONE, finished_at=5.0)

    a = store.cancel_batch(queued.id, 6.0, "cancelled by token", allowed=(BatchState.RUNNING,))
    assert (a.state, a.finished_at, a.error) == (BatchState.CANCELLED, 6.0, "cancelled by token")
    b = store.cancel_batch(running.id, 6.0, "cancelled by session 1a2b3c4d")
    assert b.state is BatchState.CANCELLED
    with pytest.raises(BatchStateError, match="is 'done'; cannot cancel"):
        store.cancel_batch(done.id, 6.0, "x")
    with pytest.raises(BatchStateError, match="is 'cancelled'; cannot cancel"):
        store.cancel_batch(running.id, 7.0, "again")
    with pytest.raises(BatchStateError):  # a cancelled batch's task cannot finish it
        store.finish_batch(running.id, state=BatchState.DONE, finished_at=8.0)
    # Crash recovery re-queues running batches only: a cancelled one stays cancelled.
    assert store.requeue_running(9.0) == []
    assert store.get_batch(running.id).state is BatchState.CANCELLED
    assert store.batch_counts()[BatchState.CANCELLED] == 2
    assert store.claim_next_queued(10.0) is None


def test_retry_requeues_a_failed_or_cancelled_batch_as_new(store: Store) -> None:
    failed = new_batch(store, 1.0)
    claim(store, 2.0)
    store.record_decision(failed.id, "gpu1", "selector", {"gpu1": {"total_s": 3.0}})
    store.finish_batch(
        failed.id, state=BatchState.FAILED, finished_at=3.0, error="boom", cloud_used_s=4.0
    )
    again = store.retry_batch(failed.id, 5.0)
    assert again.state is BatchState.QUEUED and again.attempts == 0
    assert (again.error, again.finished_at, again.started_at) == (None, None, None)
    assert (again.chosen_runtime, again.estimates, again.cloud_used_s) == (None, {}, None)
    assert again.updated_at == 5.0 and again.created_at == 1.0
    assert claim(store, 6.0).attempts == 1
    with pytest.raises(BatchStateError, match="cannot retry"):
        store.retry_batch(failed.id, 7.0)  # running
    store.cancel_batch(failed.id, 8.0, "cancelled by token")
    assert store.retry_batch(failed.id, 9.0).state is BatchState.QUEUED
    with pytest.raises(BatchStateError, match="is 'queued'; cannot retry"):
        store.retry_batch(failed.id, 10.0)
    with pytest.raises(BatchNotFound):
        store.retry_batch("nope", 1.0)


def test_out_of_service_is_kept_with_why_and_who(store: Store) -> None:
    store.upsert_runtimes([Runtime("gpu1", RuntimeKind.GPU, 1)], at=1.0)
    row = store.set_out_of_service("gpu1", True, 2.0, reason="driver update", by="token")
    assert (row.out_of_service_since, row.out_of_service_reason, row.out_of_service_by) == (
        2.0,
        "driver update",
        "token",
    )
    again = store.set_out_of_service("gpu1", True, 3.0, reason="still", by="session 1a2b3c4d")
    assert again.out_of_service_since == 2.0 and again.out_of_service_reason == "still"
    # The probes' availability is another column: neither touches the other.
    store.set_availability("gpu1", False, 4.0)
    assert store.runtimes()[0].out_of_service_since == 2.0
    back = store.set_out_of_service("gpu1", False, 5.0)
    assert (back.out_of_service_since, back.out_of_service_by, back.available) == (
        None,
        None,
        False,
    )
    with pytest.raises(RuntimeNotFound):
        store.set_out_of_service("tpu", True, 1.0)


def test_a_database_of_the_previous_revision_takes_cancelled_batches(url: str) -> None:
    """Revision 0005 widens the state's CHECK constraint in place (SQLite copies the
    table): rows written before it stay, and a batch can then be cancelled."""
    migrate(url, "0004")
    with Store(url) as s:
        old = new_batch(s, 1.0)
        with s.engine.begin() as conn:  # the Store of this revision knows newer columns
            conn.execute(
                text(
                    "INSERT INTO runtimes (name, kind, gpus, backend, available) "
                    "VALUES ('cpu', 'cpu', 0, 'local', true)"
                )
            )
    migrate(url)
    with Store(url) as s:
        assert s.cancel_batch(old.id, 2.0, "cancelled by token").state is BatchState.CANCELLED
        assert s.set_out_of_service("cpu", True, 3.0).out_of_service_since == 3.0
        assert s.list_batches(BatchState.CANCELLED)[0].n_images == 10
        with s.engine.begin() as conn, pytest.raises(IntegrityError):
            conn.execute(text("UPDATE batches SET state = 'lost'"))
