"""Scheduling across actors: unstarted streams go to whichever actor has a free stream slot.

The makespan test runs the real Scheduler on a local Ray with stand-in actors that sleep per frame
(benchmarks/schedule_makespan.py), over one long video and many short ones whose per-frame costs the
scheduler does not know, and compares it with the ideal and with the static (dealt up front) assignment.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.schedule_makespan import corpus_plans, unbalanced_corpus
from cluster.config import RunConfig
from cluster.schedule import Scheduler, StreamProgress, remaining_frames
from workers.tasks import ModelSpec

REPO = Path(__file__).resolve().parents[1]


def _scheduler(tmp_path, actors: int, per_actor: int, assignment: str = "dynamic") -> Scheduler:
    config = RunConfig(out=str(tmp_path), model=ModelSpec("sim"), progress=False)
    return Scheduler(config, actors, {"num_cpus": 0}, per_actor, assignment=assignment)


def _streams(frames: list[int]) -> list[StreamProgress]:
    corpus = unbalanced_corpus(shorts=len(frames) - 1)
    corpus = type(corpus)(tuple(frames), corpus.ms_per_frame)
    return [StreamProgress(p, 0) for p in corpus_plans(corpus, chunk_frames=100)]


def test_admission_spreads_streams_over_idle_actors_first(tmp_path):
    sched = _scheduler(tmp_path, actors=3, per_actor=2)
    streams = _streams([400, 400, 300, 300])  # none above a fair share (1400 / 3)
    sched.unstarted.extend(streams)
    sched._admit()
    # One stream per actor before any actor gets a second, longest first.
    assert [[s.plan.stream for s in sl.active] for sl in sched.slots] == [[0, 3], [1], [2]]
    assert not sched.unstarted


def test_admission_prefers_an_idle_actor_and_respects_the_slot_limit(tmp_path):
    sched = _scheduler(tmp_path, actors=2, per_actor=2)
    streams = _streams([500, 400, 300, 200, 100])
    sched.slots[0].active, sched.slots[0].call = [streams[0]], object()  # busy, one slot free
    sched.slots[1].active = [streams[1]]  # idle, one slot free
    sched.unstarted.extend(streams[2:])
    sched._admit()
    assert [s.plan.stream for s in sched.slots[1].active] == [1, 2]  # the idle actor first
    assert [s.plan.stream for s in sched.slots[0].active] == [0, 3]  # then the busy one's free slot
    assert [s.plan.stream for s in sched.unstarted] == [4]  # no slot left: it waits


def test_a_stream_longer_than_a_fair_share_runs_alone(tmp_path):
    sched = _scheduler(tmp_path, actors=2, per_actor=4)
    streams = _streams([3000, 300, 300, 300, 300, 300])  # fair share: 4500 / 2 actors
    sched.unstarted.extend(streams)
    sched._admit()
    assert [s.plan.stream for s in sched.slots[0].active] == [0]  # the critical path, alone
    assert [s.plan.stream for s in sched.slots[1].active] == [1, 2, 3, 4]
    assert [s.plan.stream for s in sched.unstarted] == [5]
    streams[0].next_chunk = 25  # 500 frames left: no longer the critical path
    sched._admit()
    assert [s.plan.stream for s in sched.slots[0].active] == [0, 5]


def test_finished_streams_free_their_slot(tmp_path):
    sched = _scheduler(tmp_path, actors=1, per_actor=1)
    first, second = _streams([300, 200])
    sched.slots[0].active = [first]
    sched.unstarted.append(second)
    sched._admit()
    assert sched.slots[0].active == [first]
    first.next_chunk = first.stop  # done
    assert remaining_frames(first) == 0
    sched._admit()
    assert sched.slots[0].active == [second]


def test_unknown_assignment_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'round-robin'"):
        _scheduler(tmp_path, 1, 1, assignment="round-robin")


def test_dynamic_makespan_is_near_ideal_on_an_unbalanced_corpus():
    """In a fresh process with a Ray of its own (this one may be connected to the session's cluster)."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.schedule_makespan", "--json", "--actors", "8",
                           "--seed", "0"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {r["assignment"]: r for r in map(json.loads, proc.stdout.splitlines()[-2:])}
    dynamic, static = runs["dynamic"], runs["static"]
    print(f"\nmakespan / ideal ({dynamic['ideal']:.2f} s): dynamic {dynamic['ratio']:.3f}, static {static['ratio']:.3f}")
    assert dynamic["ratio"] <= 1.1, dynamic
    assert dynamic["seconds"] < static["seconds"], runs
