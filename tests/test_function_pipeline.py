"""The classify pipeline and the device workers with fake devices (no TensorFlow).

A fake device "model" scores an image by its mean colour, so every score can be checked
against the image it came from; the decoder is the real one (Pillow). What is tested:
results in package order whatever the batch and chunk sizes, the member range, the
bound on images in flight, several devices sharing one source, and every way a call can
fail (bad image, bad package mid-stream, failing device, failing decoder) ending
promptly with the right error and no work left in the pool.
"""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from PIL import Image

from stoic.errors import FunctionError, InputError
from stoic.function.classifier import decode_image
from stoic.function.pipeline import HandOff, PipelineResult, run_pipeline, usable_cpus
from stoic.function.workers import ArraySource, DeviceModels, classify, run_workers
from stoic.storage.package import PackageIndex, PackageWriter, iter_package_range

SIZE = 8


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


def _package(members: list[tuple[str, bytes]]) -> io.BytesIO:
    buf = io.BytesIO()
    with PackageWriter(buf) as writer:
        for name, data in members:
            writer.add_bytes(name, data)
    buf.seek(0)
    return buf


class _Unseekable(io.RawIOBase):
    """A network-like stream: readable, not seekable."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        return self._buf.readinto(b)


def _mean_call(x: np.ndarray) -> np.ndarray:
    """A fake model: two scores per image, its mean grey level and its complement."""
    m = np.asarray(x, dtype=np.float32).mean(axis=(1, 2, 3)) / 255.0
    return np.stack([m, 1.0 - m], axis=1)


def _models(devices: list[str], batch: int, call: Any = _mean_call) -> DeviceModels:
    models = DeviceModels(devices, SIZE, 2)
    for d in devices:
        models.calls[d] = call
        models.batch_sizes[d] = batch
    return models


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(3, thread_name_prefix="test-decode") as ex:
        yield ex


def _grey(n: int) -> list[tuple[str, bytes]]:
    return [(f"{i:03d}.png", _png(i * 2 % 256)) for i in range(n)]


def _expected_mean(i: int) -> float:
    return (i * 2 % 256) / 255.0


def _grey_on_one_device(
    pool: ThreadPoolExecutor, n: int, batch: int, call: Any = _mean_call, **options: Any
) -> PipelineResult:
    """``run_pipeline`` of ``n`` grey images on one device of batch size ``batch``
    running ``call`` (``options``: the pipeline's own)."""
    return run_pipeline(
        _package(_grey(n)), _models(["CPU:0"], batch, call), pool, decode_image, **options
    )


@pytest.mark.parametrize(("batch", "chunk"), [(1, 1), (4, 3), (7, 16), (64, 5)])
def test_results_in_package_order_for_any_batch_and_chunk(pool, batch, chunk) -> None:
    members = _grey(50)
    out = run_pipeline(
        _package(members),
        _models(["CPU:0"], batch),
        pool,
        decode_image,
        decode_threads=3,
        decode_chunk=chunk,
    )
    assert out.names == [n for n, _ in members]
    assert out.rows.tolist() == list(range(50))
    assert out.scores[:, 0] == pytest.approx([_expected_mean(i) for i in range(50)], abs=1e-6)
    assert out.errors == {}
    (report,) = out.reports
    assert report.images == 50 and report.batches == -(-50 // batch)


def test_bad_images_are_reported_and_the_rest_classified(pool) -> None:
    members = _grey(10)
    members[3] = ("notes.txt", b"not an image")
    members[7] = ("cut.png", _png(9)[:30])
    out = run_pipeline(_package(members), _models(["CPU:0"], 4), pool, decode_image, decode_chunk=3)
    assert sorted(out.errors) == [3, 7]
    assert all("cannot decode image" in e for e in out.errors.values())
    assert out.rows.tolist() == [0, 1, 2, 4, 5, 6, 8, 9]
    assert out.scores[:, 0] == pytest.approx([_expected_mean(i) for i in out.rows], abs=1e-6)


@pytest.mark.parametrize("seekable", [True, False])
def test_member_range(pool, seekable) -> None:
    members = _grey(30)
    raw = _package(members).getvalue()

    def stream() -> Any:
        return io.BytesIO(raw) if seekable else io.BufferedReader(_Unseekable(raw))

    models = _models(["CPU:0"], 4)
    out = run_pipeline(stream(), models, pool, decode_image, start=10, stop=17)
    assert out.names == [n for n, _ in members[10:17]]
    assert out.scores[:, 0] == pytest.approx([_expected_mean(i) for i in range(10, 17)])
    tail = run_pipeline(stream(), models, pool, decode_image, start=25)
    assert tail.names == [n for n, _ in members[25:]]
    first = run_pipeline(stream(), models, pool, decode_image, start=5, first_only=True)
    assert first.names == ["005.png"] and first.rows.tolist() == [0]
    with pytest.raises(InputError, match="stop=31 is beyond the package's 30 members"):
        run_pipeline(stream(), models, pool, decode_image, start=28, stop=31)
    with pytest.raises(InputError, match="start=30 is beyond the package's 30 members"):
        run_pipeline(stream(), models, pool, decode_image, start=30)


def test_iter_package_range_checks_skipped_members_and_arguments() -> None:
    raw = _package(_grey(3)).getvalue()
    assert [i for i, _, _ in iter_package_range(io.BytesIO(raw), 1)] == [1, 2]
    assert [i for i, _, _ in iter_package_range(io.BytesIO(raw), 0, 3)] == [0, 1, 2]
    for start, stop in ((-1, None), (2, 2), (3, 1)):
        with pytest.raises(InputError, match="invalid member range"):
            list(iter_package_range(io.BytesIO(raw), start, stop))
    assert list(iter_package_range(io.BytesIO(_package([]).getvalue()))) == []


def test_images_in_flight_stay_bounded(pool) -> None:
    """With a slow device, the reader must wait: never more than the capacity read
    ahead of the model, whatever the package size."""

    def slow(x: np.ndarray) -> np.ndarray:
        time.sleep(0.002)
        return _mean_call(x)

    out = _grey_on_one_device(
        pool, 200, 4, slow, decode_threads=3, decode_chunk=2, max_inflight_images=10
    )
    assert len(out.rows) == 200
    assert 4 <= out.peak_inflight <= 10
    # A capacity below one batch is raised to a batch plus a chunk (else no batch forms).
    small = _grey_on_one_device(pool, 40, 8, decode_chunk=3, max_inflight_images=2)
    assert len(small.rows) == 40 and small.peak_inflight <= 8 + 3


def test_devices_share_one_source(pool) -> None:
    """Two fake devices, one slower: both take batches, every image is scored once."""
    seen: dict[str, list[int]] = {"A:0": [], "B:0": []}

    def device(name: str, delay: float) -> Any:
        def call(x: np.ndarray) -> np.ndarray:
            time.sleep(delay)
            seen[name].append(len(x))
            return _mean_call(x)

        return call

    models = _models(["A:0", "B:0"], 5)
    models.calls["A:0"] = device("A:0", 0.001)
    models.calls["B:0"] = device("B:0", 0.004)
    out = run_pipeline(_package(_grey(120)), models, pool, decode_image, decode_chunk=4)
    assert out.rows.tolist() == list(range(120))
    assert out.scores[:, 0] == pytest.approx([_expected_mean(i) for i in range(120)])
    images = {r.device: r.images for r in out.reports}
    assert images["A:0"] > 0 and images["B:0"] > 0
    assert images["A:0"] + images["B:0"] == 120
    assert all(n <= 5 for n in seen["A:0"] + seen["B:0"])


def test_failing_device_aborts_the_call_without_leaving_work(pool) -> None:
    calls = 0

    def broken(x: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("device lost")
        return _mean_call(x)

    t0 = time.perf_counter()
    with pytest.raises(FunctionError, match=r"CPU:0: RuntimeError: device lost"):
        _grey_on_one_device(pool, 300, 4, broken, decode_chunk=2, max_inflight_images=8)
    assert time.perf_counter() - t0 < 60
    assert not [t for t in threading.enumerate() if t.name == "stoic-reader"]
    assert pool.submit(lambda: 1).result(timeout=5) == 1  # the pool is free


def test_bad_package_mid_stream_is_an_input_error(pool) -> None:
    """An unsafe member after 40 good ones: the call fails with InputError, although
    the first chunks were already decoded and classified."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in [*_grey(40), ("../evil.png", _png(1)), *_grey(5)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(InputError, match=r"'\.\.' is not allowed"):
        run_pipeline(
            io.BytesIO(buf.getvalue()), _models(["CPU:0"], 4), pool, decode_image, decode_chunk=4
        )
    with pytest.raises(InputError, match="not a tar archive"):
        run_pipeline(io.BytesIO(b"x" * 2000), _models(["CPU:0"], 4), pool, decode_image)


def test_failing_decoder_fails_the_call(pool) -> None:
    def decode(data: bytes, size: int) -> np.ndarray:
        raise MemoryError("no room")

    with pytest.raises(MemoryError, match="no room"):
        run_pipeline(_package(_grey(20)), _models(["CPU:0"], 4), pool, decode)


def test_classify_on_decoded_images_and_array_source() -> None:
    x = np.stack([np.full((SIZE, SIZE, 3), v, np.uint8) for v in range(0, 250, 10)])
    scores, reports = classify(_models(["A:0", "B:0"], 3), list(x))
    assert scores[:, 0] == pytest.approx(x[:, 0, 0, 0] / 255.0)
    assert sum(r.images for r in reports) == len(x)
    source = ArraySource(x)
    assert source.take(4)[0].tolist() == [0, 1, 2, 3]  # type: ignore[index]
    source.abort(RuntimeError())
    assert source.take(4) is None
    empty, _ = classify(_models(["A:0"], 3), [])
    assert empty.shape == (0, 2)


def test_run_workers_batch_override_and_handoff_abort() -> None:
    got: list[int] = []
    x = np.zeros((10, SIZE, SIZE, 3), np.uint8)
    reports = run_workers(
        _models(["A:0"], 4), ArraySource(x), lambda rows, s: got.append(len(rows)), 3
    )
    assert got == [3, 3, 3, 1] and reports[0].batch_size == 3
    handoff = HandOff(capacity=4, max_pending=1)
    assert handoff.reserve(2)
    handoff.abort(RuntimeError("stop"))
    assert handoff.reserve(1) is False and handoff.take(1) is None
    assert usable_cpus() >= 1


def test_package_index_seeks_to_the_range() -> None:
    """Chunks read in any order with a shared index give what a plain read gives; the
    index learns offsets as it goes and, once complete, rejects a range at once."""
    raw = _package(_grey(30)).getvalue()

    def read(start: int, stop: int | None, index: PackageIndex | None) -> list[Any]:
        return list(iter_package_range(io.BytesIO(raw), start, stop, index))

    index = PackageIndex()
    for start, stop in ((0, 5), (20, 25), (10, 12), (25, None), (5, 10), (12, 20)):
        assert read(start, stop, index) == read(start, stop, None)
    assert index.n_members == 30 and len(index.offsets) == 30
    assert index.offsets == sorted(index.offsets) and index.offsets[0] == 0

    class NoReads(io.BytesIO):
        def read(self, *args: Any) -> bytes:
            raise AssertionError("the index should have answered")

    with pytest.raises(InputError, match="beyond the package's 30 members"):
        list(iter_package_range(NoReads(raw), 28, 31, index))
    # A global header before the first member: offsets are not learnt, reads still work.
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "x"}
    ) as tar:
        for name, data in _grey(4):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    plain = PackageIndex()
    got = list(iter_package_range(io.BytesIO(buf.getvalue()), 2, 4, plain))
    assert [name for _, name, _ in got] == ["002.png", "003.png"] and plain.offsets == []
