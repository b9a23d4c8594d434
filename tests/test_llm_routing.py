"""The routing rules of several LLM servers (`aistack.llm_routing`): affinity, failover, least
busy, all down, and reading a server's load. Pure: the real servers are in
tests/aider_wrapper/test_routing_smol.py."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from aistack.llm_routing import Server, choose, load_from_metrics, load_from_slots

URLS = [f"http://10.0.0.{i}:8080" for i in range(1, 6)]

servers = st.lists(
    st.builds(
        Server,
        url=st.sampled_from(URLS),
        healthy=st.booleans(),
        detail=st.none(),
        busy=st.none() | st.integers(0, 8),
        slots=st.none() | st.integers(1, 8),
        routed=st.integers(0, 4),
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda s: s.url,
)
tasks = st.text(min_size=1, max_size=20)


@given(servers, tasks, st.data())
def test_a_task_stays_on_its_server_while_that_is_healthy(pool, task, data) -> None:
    last = data.draw(st.sampled_from(pool))
    chosen = choose(task, pool, last.url)
    if last.healthy:
        assert chosen == last  # however busy it is: its cache is there
    else:
        assert chosen is None or (chosen.healthy and chosen.url != last.url)  # moved, never to a sick one


@given(servers, tasks, st.none() | st.sampled_from(URLS))
def test_a_new_or_moved_task_goes_to_the_healthy_server_with_most_free_slots(pool, task, last) -> None:
    if any(s.url == last and s.healthy for s in pool):
        return  # affinity wins: the test above
    chosen = choose(task, pool, last)
    healthy = [s for s in pool if s.healthy]
    if not healthy:
        assert chosen is None  # all down: the run fails transiently, spending no iteration
        return
    assert chosen in healthy and chosen.free == max(s.free for s in healthy)
    assert choose(task, list(reversed(pool)), last) == chosen  # the order servers are listed in does not matter


def test_free_slots_count_this_processs_own_runs_until_the_next_poll_sees_them() -> None:
    idle = [Server(URLS[0], True, None, busy=0, slots=2), Server(URLS[1], True, None, busy=0, slots=2)]
    a = choose("task-a", idle, None)
    assert a is not None
    after = [Server(s.url, True, None, 0, 2, routed=1 if s.url == a.url else 0) for s in idle]
    assert choose("task-b", after, None).url != a.url  # four tasks starting at once go 2 and 2, not 4 and 0
    # a reported load counts when it is more than ours: someone else's runs
    busy_elsewhere = [Server(URLS[0], True, None, busy=2, slots=2), Server(URLS[1], True, None, busy=1, slots=2, routed=1)]
    assert choose("task-c", busy_elsewhere, None).url == URLS[1]


def test_a_server_that_does_not_report_load_comes_after_one_equally_free_that_does() -> None:
    ollama = Server(URLS[0], True, None, busy=None, slots=None)  # free: -(our runs there) = 0
    metrics_only = Server(URLS[1], True, None, busy=0, slots=None)  # free 0, and it says so
    assert choose("t", [ollama, metrics_only], None) == metrics_only
    assert choose("t", [ollama, Server(URLS[1], True, None, busy=1, slots=None)], None) == ollama  # one busy < unknown


def test_equal_servers_share_new_tasks_by_rendezvous_hash() -> None:
    pool = [Server(url, True, None, busy=0, slots=2) for url in URLS[:2]]
    placed = Counter(choose(f"task-{i}", pool, None).url for i in range(400))
    assert set(placed) == set(URLS[:2]) and min(placed.values()) > 150  # near half each
    # Losing one server moves only its tasks: every other task keeps where it hashed to.
    three = [Server(url, True, None, busy=0, slots=2) for url in URLS[:3]]
    before = {i: choose(f"task-{i}", three, None).url for i in range(200)}
    after = {i: choose(f"task-{i}", [s for s in three if s.url != URLS[2]], None).url for i in range(200)}
    assert all(after[i] == before[i] for i in before if before[i] != URLS[2])


def test_load_is_read_from_slots_or_metrics() -> None:
    assert load_from_slots([{"id": 0, "is_processing": True}, {"id": 1, "is_processing": False}]) == (1, 2)
    assert load_from_slots([{"id": 0, "state": 1}, {"id": 1, "state": 0}, {"id": 2, "state": 0}]) == (1, 3)  # older llama-server
    for not_slots in ({"error": {"code": 501}}, [], ["x"], "text"):
        assert load_from_slots(not_slots) is None
    llama = (
        "# HELP llamacpp:requests_processing Number of requests processing.\n# TYPE llamacpp:requests_processing gauge\n"
        "llamacpp:requests_processing 2\n# TYPE llamacpp:requests_deferred gauge\nllamacpp:requests_deferred 1\n"
        "# TYPE llamacpp:prompt_tokens_total counter\nllamacpp:prompt_tokens_total 4096\n"
    )
    assert load_from_metrics(llama) == 3
    vllm = 'vllm:num_requests_running{model_name="m"} 4.0\nvllm:num_requests_waiting{model_name="m"} 0.0\n'
    assert load_from_metrics(vllm) == 4
    assert load_from_metrics("# TYPE other gauge\nother 5\n") is None
    assert load_from_metrics("<html>not found</html>") is None
