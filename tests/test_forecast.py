"""Share's forecast: chunk sizes, overtaken pods and stragglers, as plain arithmetic."""

from __future__ import annotations

import math

from stoic.schedule.share.board import Chunk, ShareBoard
from stoic.schedule.share.forecast import Forecast, Pace, share_capacity
from stoic.values import Component, Estimate


def forecast(board: ShareBoard, *paces: Pace, factor: float = 2.0) -> Forecast:
    return Forecast(board, {p.name: p for p in paces}, chunk_factor=factor, min_chunk_s=0.0)


def test_a_chunk_is_a_share_of_the_time_everyone_would_take() -> None:
    board = ShareBoard(100)
    edge = Pace("edge", rate=1.0, fixed_s=0.0, cloud=False, ready_by=0.0, active=True)
    assert forecast(board, edge).size(edge, now=0.0) == 50  # alone: half of 100 s
    # A pod ready at 10 s labelling 4 images/s: everyone is done at 28 s.
    gpu = Pace("gpu1", rate=4.0, fixed_s=0.0, cloud=True, ready_by=10.0)
    f = forecast(board, edge, gpu)
    assert f.size(edge, now=0.0) == 14  # half of the edge's 28 s
    assert f.size(gpu, now=0.0) == 36  # half of the pod's 18 s, at 4 images/s
    assert forecast(board, edge, gpu, factor=1.0).size(gpu, now=0.0) == 72
    # At least min_chunk_s of work, but never more than 1/chunk_factor of the open
    # images while another may still help.
    fast = Pace("gpu2", rate=100.0, fixed_s=0.0, cloud=True, ready_by=0.0, active=True)
    paces = {"edge": edge, "gpu2": fast}
    long = Forecast(board, paces, chunk_factor=2.0, min_chunk_s=80.0)
    assert long.size(fast, now=0.0) == 50
    edge.gone = True
    assert long.size(fast, now=0.0) == 100
    edge.gone = False
    gpu.error = RuntimeError("timed out")  # a failed pod helps nobody
    assert f.size(edge, now=0.0) == 50


def test_a_pod_is_overtaken_when_the_others_finish_before_it_is_ready() -> None:
    board = ShareBoard(50)
    edge = Pace("edge", rate=1.0, fixed_s=0.0, cloud=False, ready_by=0.0, active=True)
    gpu = Pace("gpu1", rate=4.0, fixed_s=0.0, cloud=True, ready_by=100.0)
    f = forecast(board, edge, gpu)
    assert f.overtaken(gpu, now=0.0)  # the edge labels 50 images in 50 s < 100 s
    assert not f.overtaken(gpu, now=60.0)  # 40 s left to its readiness: 40 < 50 images
    assert not forecast(ShareBoard(200), edge, gpu).overtaken(gpu, now=0.0)


def test_a_slow_holder_turns_straggler_and_the_forecast_says_when() -> None:
    board = ShareBoard(10)
    chunk = board.take("edge", 10, from_back=False)
    assert chunk == Chunk(0, 10)
    edge = Pace("edge", rate=1.0, fixed_s=0.0, cloud=False, ready_by=0.0, active=True)
    edge.started[chunk] = 0.0  # predicted to end at 10 s
    gpu = Pace("gpu1", rate=2.0, fixed_s=0.0, cloud=True, ready_by=0.0, active=True, calls=1)
    f = forecast(board, edge, gpu)
    # At 2 s the edge needs 8 s more, the pod 5 s: a hedge pays.
    assert f.straggling(gpu, now=2.0)[0] == ["edge"]
    # At 6 s the edge needs 4 s more, the pod still 5 s: not yet; look again once the
    # edge is overdue by more than the pod's 5 s.
    eligible, wake = f.straggling(gpu, now=6.0)
    assert eligible == [] and math.isclose(wake, 10.0 + 1e-3)
    board.hedge("gpu1")  # the batch's one hedge is spent: nothing more to look for
    assert f.straggling(gpu, now=6.0) == ([], math.inf)


def test_a_pods_capacity_is_its_ready_time_and_the_slower_of_labelling_and_uplink() -> None:
    e = Estimate("gpu1", Component(50.0), Component(30.0), Component(10.0))
    cap = share_capacity(e, 100, 100_000, edge=False)
    assert (cap.ready_s, cap.per_image_s) == (30.0, 0.5)  # the uplink feeds 2 images/s
    assert share_capacity(e, 100, 100_000, edge=True).ready_s == 0.0
