"""The OpenAI-compatible API, through the official `openai` package and raw HTTP."""

import json
import random
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import openai
import pytest
import requests

from conftest import MODEL_ID, Server, run_cli

HELLO = [{"role": "user", "content": "Hello"}]


def chat(client, **kw):
    kw.setdefault("model", MODEL_ID)
    kw.setdefault("messages", HELLO)
    return client.chat.completions.create(**kw)


def sse_events(resp):
    """The `data:` payloads of a streamed response (the last one is `[DONE]`)."""
    out = []
    for line in resp.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            out.append(line[len("data: "):])
    return out


# ---------------------------------------------------------------- health, models, metrics


def test_health_models_metrics(server, client):
    r = requests.get(server.url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    # A Hugging Face folder keeps its layout: nothing to repack.
    assert r.json()["repacking"] is False
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL_ID]
    assert client.models.retrieve(MODEL_ID).id == MODEL_ID
    r = requests.get(server.url + "/v1/models/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    m = server.metrics()
    for name in [
        "deepseek_queue_depth",
        "deepseek_running_sequences",
        "deepseek_prompt_tokens_total",
        "deepseek_generation_tokens_total",
        "deepseek_time_to_first_token_seconds_count",
        "deepseek_time_per_output_token_seconds_count",
    ]:
        assert name in m, name
    assert any(k.startswith("deepseek_requests_total{") for k in m)


def test_loading_state(server):
    """While the model loads, /health says so and requests get 503 (seen only if startup was slow
    enough for a probe to land in that window)."""
    if not server.loading_answers:
        pytest.skip("the model loaded before the first probe")
    for health, status, body in server.loading_answers:
        assert health["status"] == "loading"
        assert status == 503
        assert body["error"]["code"] == "model_loading"


# ---------------------------------------------------------------- chat


def test_chat_matches_cli_greedy(client):
    ref = run_cli("Hello", "--chat", "-n", "24")
    r = chat(client, max_tokens=24, temperature=0)
    assert r.object == "chat.completion"
    assert r.model == MODEL_ID
    c = r.choices[0]
    assert c.index == 0 and c.message.role == "assistant"
    assert c.message.content == ref["text"]
    assert c.finish_reason == ref["finish_reason"] == "length"
    assert r.usage.prompt_tokens == len(ref["prompt_ids"])
    assert r.usage.completion_tokens == len(ref["ids"]) == 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_content_parts_and_system(client):
    a = chat(
        client,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]},
        ],
        max_tokens=8,
        temperature=0,
    )
    b = chat(
        client,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        max_tokens=8,
        temperature=0,
    )
    assert a.choices[0].message.content == b.choices[0].message.content


def test_chat_streamed(client):
    whole = chat(client, max_tokens=16, temperature=0)
    chunks = list(
        chat(client, max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True})
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == whole.choices[0].message.content
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens == 16
    assert usage.usage.prompt_tokens == whole.usage.prompt_tokens


def test_chat_stream_raw_sse(server):
    r = requests.post(
        server.url + "/v1/chat/completions",
        json={"messages": HELLO, "max_tokens": 4, "stream": True, "temperature": 0},
        stream=True,
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    ev = sse_events(r)
    assert ev[-1] == "[DONE]"
    objs = [json.loads(e) for e in ev[:-1]]
    assert objs[0]["choices"][0]["delta"]["role"] == "assistant"
    assert objs[-1]["choices"][0]["finish_reason"] == "length"
    assert "usage" not in objs[-1]


def test_max_tokens_and_finish_reason(client):
    for key in ["max_tokens", "max_completion_tokens"]:
        r = chat(client, temperature=0, **{key: 3})
        assert r.usage.completion_tokens == 3
        assert r.choices[0].finish_reason == "length"


def test_stop_strings(client):
    full = chat(client, max_tokens=30, temperature=0).choices[0].message.content
    stop = full[12:15]
    assert stop.strip(), full
    expected = full[: full.index(stop)]
    r = chat(client, max_tokens=30, temperature=0, stop=stop)
    assert r.choices[0].message.content == expected
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < 30
    # A list, streamed, gives the same text.
    chunks = list(chat(client, max_tokens=30, temperature=0, stop=["\u0000never", stop], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_logprobs_chat(client):
    r = chat(client, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 6
    for t in content:
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 3
        tops = [x.logprob for x in t.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert t.token == t.top_logprobs[0].token
        assert abs(t.logprob - tops[0]) < 1e-9
        assert t.bytes == list(t.token.encode())
    assert "".join(t.token for t in content) == r.choices[0].message.content
    # Streamed logprobs arrive with their chunks.
    chunks = list(chat(client, max_tokens=6, temperature=0, logprobs=True, top_logprobs=1, stream=True))
    streamed = [t.logprob for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert streamed == pytest.approx([t.logprob for t in content])
    # No logprobs unless asked.
    assert chat(client, max_tokens=2).choices[0].logprobs is None


def test_seed_reproducible(client):
    kw = dict(max_tokens=20, temperature=1.0, top_p=1.0)
    a = chat(client, seed=42, **kw).choices[0].message.content
    b = chat(client, seed=42, **kw).choices[0].message.content
    c = chat(client, seed=43, **kw).choices[0].message.content
    assert a == b
    assert a != c


def test_n_choices(client):
    r = chat(client, max_tokens=8, temperature=0, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) == 1
    assert r.usage.completion_tokens == 24
    r = chat(client, max_tokens=12, temperature=1.0, seed=7, n=2)
    assert r.choices[0].message.content != r.choices[1].message.content


def test_sampling_fields_accepted(client):
    r = chat(
        client,
        max_tokens=5,
        temperature=0.8,
        top_p=0.9,
        seed=1,
        frequency_penalty=0.5,
        presence_penalty=0.5,
        extra_body={"top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1},
    )
    assert r.usage.completion_tokens == 5


def test_prefix_cache_next_turn(client):
    first = chat(client, messages=[{"role": "user", "content": "Tell me a story"}], max_tokens=12, temperature=0)
    turn2 = [
        {"role": "user", "content": "Tell me a story"},
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And then?"},
    ]
    r = chat(client, messages=turn2, max_tokens=12, temperature=0)
    assert r.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1
    again = chat(client, messages=turn2, max_tokens=12, temperature=0)
    assert again.choices[0].message.content == r.choices[0].message.content


# ---------------------------------------------------------------- completions


def test_completions_matches_cli(client):
    ref = run_cli("Once upon a time", "-n", "20")
    r = client.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=20, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].text == ref["text"]
    assert r.usage.prompt_tokens == len(ref["prompt_ids"])
    assert r.usage.completion_tokens == 20
    assert r.choices[0].finish_reason == "length"
    # The same prompt as token ids.
    r2 = client.completions.create(model=MODEL_ID, prompt=ref["prompt_ids"], max_tokens=20, temperature=0)
    assert r2.choices[0].text == ref["text"]
    # Several prompts: one choice each.
    r3 = client.completions.create(
        model=MODEL_ID, prompt=[ref["prompt_ids"], ref["prompt_ids"][:3]], max_tokens=5, temperature=0
    )
    assert [c.index for c in r3.choices] == [0, 1]
    assert r3.choices[0].text == r2.choices[0].text[: len(r3.choices[0].text)]
    assert r3.usage.prompt_tokens == len(ref["prompt_ids"]) + 3


def test_completions_streamed_and_logprobs(client):
    whole = client.completions.create(
        model=MODEL_ID, prompt="Once upon a time", max_tokens=10, temperature=0, logprobs=2
    )
    lp = whole.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 10
    assert all(len(t) <= 2 for t in lp.top_logprobs)
    assert "".join(lp.tokens) == whole.choices[0].text
    chunks = list(
        client.completions.create(
            model=MODEL_ID,
            prompt="Once upon a time",
            max_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert [c for c in chunks if c.choices][-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 10


# ---------------------------------------------------------------- concurrency


def test_eight_concurrent_clients_match_alone(server, client):
    prompts = [f"Prompt number {i}: " + "word " * (i * 5) for i in range(8)]

    def one(i):
        kw = dict(model=MODEL_ID, messages=[{"role": "user", "content": prompts[i]}], max_tokens=24)
        if i % 2:
            kw.update(temperature=0.9, seed=100 + i)
        else:
            kw.update(temperature=0)
        return client.chat.completions.create(**kw).choices[0].message.content

    alone = [one(i) for i in range(8)]
    before = server.metrics()
    with ThreadPoolExecutor(8) as ex:
        together = list(ex.map(one, range(8)))
    after = server.metrics()
    assert together == alone
    # They shared forward passes: far fewer steps than tokens.
    steps = after["deepseek_steps_total"] - before["deepseek_steps_total"]
    tokens = after["deepseek_generation_tokens_total"] - before["deepseek_generation_tokens_total"]
    assert tokens == 8 * 24
    assert steps < 0.75 * tokens, (steps, tokens)


def test_prefix_reused_from_running_sequence(server):
    prompt = [100000] + [1000 + (i * 37) % 5000 for i in range(80)]
    a = requests.post(
        server.url + "/v1/completions",
        json={"prompt": prompt, "max_tokens": 400, "stream": True, "temperature": 0, "ignore_eos": True},
        stream=True,
    )
    it = a.iter_lines()
    next(l for l in it if l.startswith(b"data: "))
    b = requests.post(
        server.url + "/v1/completions",
        json={"prompt": prompt + [2000, 2001], "max_tokens": 4, "temperature": 0},
    ).json()
    a.close()
    assert b["usage"]["prompt_tokens"] == 83
    assert b["usage"]["prompt_tokens_details"]["cached_tokens"] >= 80


def test_disconnect_frees_slot(server):
    before = server.metrics()
    r = requests.post(
        server.url + "/v1/completions",
        json={"prompt": "x", "max_tokens": 480, "stream": True, "temperature": 0, "ignore_eos": True},
        stream=True,
    )
    it = r.iter_lines()
    got = 0
    for line in it:
        if line.startswith(b"data: "):
            got += 1
            if got >= 3:
                break
    assert server.metrics()["deepseek_running_sequences"] >= 1
    r.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)
    r.close()
    deadline = time.time() + 10
    while time.time() < deadline:
        m = server.metrics()
        if m["deepseek_running_sequences"] == 0:
            break
        time.sleep(0.05)
    assert m["deepseek_running_sequences"] == 0
    assert m["deepseek_sequences_cancelled_total"] >= before["deepseek_sequences_cancelled_total"] + 1
    generated = m["deepseek_generation_tokens_total"] - before["deepseek_generation_tokens_total"]
    assert generated < 480


# ---------------------------------------------------------------- errors


def err(r, status, param=None, code=None):
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"}
    assert isinstance(e["message"], str) and e["message"]
    if param is not None:
        assert e["param"] == param, e
    if code is not None:
        assert e["code"] == code, e
    return e


def test_error_cases(server):
    u = server.url
    chat_url, cmpl_url = u + "/v1/chat/completions", u + "/v1/completions"
    post = lambda url, body: requests.post(url, data=body if isinstance(body, (str, bytes)) else json.dumps(body), headers={"content-type": "application/json"})
    ok = {"messages": HELLO, "max_tokens": 2}
    err(post(chat_url, "{bad json"), 400)
    err(post(chat_url, "[]"), 400)
    err(post(chat_url, {}), 400, "messages")
    err(post(chat_url, {"messages": "hi"}), 400, "messages")
    err(post(chat_url, {**ok, "max_tokens": "2"}), 400, "max_tokens")
    err(post(chat_url, {**ok, "temperature": "hot"}), 400, "temperature")
    err(post(chat_url, {**ok, "stream": "yes"}), 400, "stream")
    err(post(chat_url, {"messages": [{"role": "wizard", "content": "x"}]}), 400, "messages[0].role")
    err(post(chat_url, {"messages": [{"role": "user", "content": 5}]}), 400, "messages[0].content")
    err(post(chat_url, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}), 400)
    err(post(chat_url, {**ok, "max_tokens": 0}), 400, "max_tokens")
    err(post(chat_url, {**ok, "max_tokens": -5}), 400, "max_tokens")
    err(post(chat_url, {**ok, "max_tokens": 10**6}), 400, "max_tokens", "context_length_exceeded")
    err(post(chat_url, {**ok, "temperature": 3}), 400, "temperature")
    err(post(chat_url, {**ok, "top_p": 1.5}), 400, "top_p")
    err(post(chat_url, {**ok, "n": 0}), 400, "n")
    err(post(chat_url, {**ok, "stop": ["a", "b", "c", "d", "e"]}), 400, "stop")
    err(post(chat_url, {**ok, "stop": 5}), 400, "stop")
    err(post(chat_url, {**ok, "top_logprobs": 3}), 400, "top_logprobs")
    err(post(chat_url, {**ok, "logprobs": True, "top_logprobs": 50}), 400, "top_logprobs")
    err(post(chat_url, {**ok, "tools": [{"type": "function", "function": {"name": "f"}}]}), 400, "tools")
    err(post(chat_url, {**ok, "logit_bias": {"5": 10}}), 400, "logit_bias")
    long = {"role": "user", "content": "hello " * 2000}
    err(post(chat_url, {"messages": [long]}), 400, "messages", "context_length_exceeded")
    err(post(cmpl_url, {"prompt": list(range(600))}), 400, "prompt", "context_length_exceeded")
    err(post(cmpl_url, {"prompt": [1, 2, 10**7]}), 400, "prompt")
    err(post(cmpl_url, {"prompt": []}), 400, "prompt")
    err(post(cmpl_url, {"prompt": {"x": 1}}), 400, "prompt")
    err(post(cmpl_url, {"prompt": "x", "echo": True}), 400, "echo")
    err(post(cmpl_url, {"prompt": "x", "suffix": "y"}), 400, "suffix")
    err(post(cmpl_url, {"prompt": "x", "logprobs": 9}), 400, "logprobs")
    err(requests.get(u + "/v1/nothing"), 404)
    err(requests.get(u + "/nothing"), 404)
    err(requests.get(chat_url), 405)
    err(requests.delete(u + "/v1/models"), 405)
    err(post(cmpl_url, b"{\"prompt\": \"" + b"a" * (5 << 20) + b"\"}"), 413)
    # Still healthy, and nothing answered 500.
    assert requests.get(u + "/health").status_code == 200
    assert not any('status="500"' in k for k in server.metrics())


def test_fuzz_bad_bodies_never_500(server):
    rng = random.Random(1234)
    base = json.dumps({"messages": HELLO, "max_tokens": 2, "temperature": 0, "stop": ["x"], "n": 1})
    values = [None, True, -1, 0, 1e308, -1e308, "", "x" * 3, [], {}, [1, "a"], {"a": None}, 2**64, 0.5]
    keys = ["messages", "max_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "seed", "n",
            "logprobs", "top_logprobs", "stream", "stream_options", "frequency_penalty", "presence_penalty",
            "repeat_penalty", "max_completion_tokens", "prompt", "logit_bias", "response_format"]
    for i in range(120):
        if i % 3 == 0:
            s = bytearray(base.encode())
            for _ in range(rng.randint(1, 4)):
                s[rng.randrange(len(s))] = rng.randrange(256)
            body = bytes(s)
        else:
            d = json.loads(base)
            for _ in range(rng.randint(1, 3)):
                d[rng.choice(keys)] = rng.choice(values)
            body = json.dumps(d).encode()
        for path in ["/v1/chat/completions", "/v1/completions"]:
            r = requests.post(server.url + path, data=body, headers={"content-type": "application/json"})
            assert r.status_code in (200, 400), (body, r.status_code, r.text)
            if r.status_code == 400:
                assert "error" in r.json()
            elif r.headers["content-type"].startswith("text/event-stream"):
                assert r.text.rstrip().endswith("data: [DONE]")
    assert requests.get(server.url + "/health").status_code == 200


# ---------------------------------------------------------------- separate servers


def test_api_key_and_no_prefix_cache(client):
    s = Server("--api-key", "sekrit", "--parallel", "2", "--no-prefix-cache")
    try:
        url = s.url + "/v1/chat/completions"
        body = {"messages": HELLO, "max_tokens": 12, "temperature": 0}
        err(requests.post(url, json=body), 401, code="invalid_api_key")
        err(requests.post(url, json=body, headers={"Authorization": "Bearer wrong"}), 401)
        err(requests.get(s.url + "/v1/models"), 401)
        assert requests.get(s.url + "/health").status_code == 200
        good = openai.OpenAI(base_url=s.url + "/v1", api_key="sekrit", max_retries=0)
        bad = openai.OpenAI(base_url=s.url + "/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model=MODEL_ID, messages=HELLO, max_tokens=2)
        a = good.chat.completions.create(model=MODEL_ID, **body)
        assert a.usage.prompt_tokens_details.cached_tokens == 0
        # The same greedy text without any prefix reuse as with it on the main server.
        assert a.choices[0].message.content == chat(client, max_tokens=12, temperature=0).choices[0].message.content
    finally:
        s.stop()


def test_queue_full(client):
    s = Server("--parallel", "1", "--max-queue", "1")
    try:
        url = s.url + "/v1/completions"
        body = {"prompt": "x", "max_tokens": 400, "temperature": 0, "ignore_eos": True}

        def go(_):
            return requests.post(url, json=body)

        with ThreadPoolExecutor(5) as ex:
            rs = list(ex.map(go, range(5)))
        codes = sorted(r.status_code for r in rs)
        assert codes.count(200) >= 2, codes
        assert 503 in codes, codes
        for r in rs:
            if r.status_code == 503:
                err(r, 503, code="queue_full")
        m = s.metrics()
        assert m['deepseek_requests_total{endpoint="/v1/completions",status="503"}'] >= 1
    finally:
        s.stop()


def test_sigterm_finishes_running_and_exits(client):
    s = Server("--parallel", "2")
    try:
        r = requests.post(
            s.url + "/v1/completions",
            json={"prompt": "x", "max_tokens": 60, "stream": True, "temperature": 0, "ignore_eos": True},
            stream=True,
        )
        it = r.iter_lines()
        first = next(l for l in it if l.startswith(b"data: "))
        assert first
        s.proc.send_signal(signal.SIGTERM)
        rest = [l for l in it if l.startswith(b"data: ")]
        assert rest[-1] == b"data: [DONE]"
        finish = json.loads(rest[-2][len(b"data: "):])["choices"][0]["finish_reason"]
        assert finish == "length"
        assert s.proc.wait(30) == 0
        # No longer accepting.
        with pytest.raises(requests.ConnectionError):
            requests.get(s.url + "/health", timeout=2)
        assert "shutting down" in s.logs()
    finally:
        s.stop()


def test_disconnect_non_streamed_cancels(server):
    before = server.metrics()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(
            server.url + "/v1/completions",
            json={"prompt": "y", "max_tokens": 480, "temperature": 0, "ignore_eos": True},
            timeout=0.3,
        )
    deadline = time.time() + 10
    while time.time() < deadline:
        m = server.metrics()
        if m["deepseek_sequences_cancelled_total"] > before["deepseek_sequences_cancelled_total"]:
            break
        time.sleep(0.05)
    assert m["deepseek_sequences_cancelled_total"] >= before["deepseek_sequences_cancelled_total"] + 1
    assert m["deepseek_running_sequences"] == 0


def test_sigterm_cancels_after_timeout(client):
    s = Server("--parallel", "2", "--shutdown-timeout", "0")
    try:
        r = requests.post(
            s.url + "/v1/completions",
            json={"prompt": "x", "max_tokens": 480, "stream": True, "temperature": 0, "ignore_eos": True},
            stream=True,
        )
        it = r.iter_lines()
        next(l for l in it if l.startswith(b"data: "))
        s.proc.send_signal(signal.SIGTERM)
        events = [l[len(b"data: "):] for l in it if l.startswith(b"data: ")]
        assert events[-1] == b"[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert len(chunks) < 400
        assert s.proc.wait(30) == 0
        assert "cancelling the running requests" in s.logs()
    finally:
        s.stop()


def test_chunked_prefill_gives_the_same_text(client):
    """Prompts prefilled 7 tokens per step, next to running streams, give the text of one pass."""
    prompts = [f"Chunked prefill {i}: " + "lorem ipsum dolor " * (10 + i * 7) for i in range(4)]
    reference = [
        chat(client, messages=[{"role": "user", "content": p}], max_tokens=16, temperature=0).choices[0].message.content
        for p in prompts
    ]
    s = Server("--parallel", "4", "--prefill-chunk", "7", "--no-prefix-cache")
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)

        def one(i):
            r = c.chat.completions.create(
                model=MODEL_ID, messages=[{"role": "user", "content": prompts[i]}], max_tokens=16, temperature=0
            )
            return r.choices[0].message.content

        with ThreadPoolExecutor(4) as ex:
            assert list(ex.map(one, range(4))) == reference
    finally:
        s.stop()
