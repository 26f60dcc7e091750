// lightmoe serve over raw HTTP: bad requests and their OpenAI-shaped errors,
// the API key, the body limit, a full queue (429), a client that hangs up
// mid-stream, slow clients dropped after --timeout, /health, /v1/models,
// /metrics. Run by tests/server.sh, which starts server A (PORT: --api-key,
// --max-body 64K) and server B (PORT_B: --max-seqs 1 --max-queue 0,
// --timeout TIMEOUT, no key).
import http from 'node:http';
import net from 'node:net';
import { KEY, NAME, PORT, check, eq, finish, isOpenAIError, metrics, request, sleep, test, waitMetrics } from './common.mjs';

const PORT_B = Number(process.env.PORT_B);
const TIMEOUT = Number(process.env.TIMEOUT);  // server B's --timeout, seconds
const MAX_BODY = 64 * 1024;
const ok = { model: NAME, prompt: 'The Union is', max_tokens: 4 };

// expectError(name, response, status, {param, code, type}): the status and an OpenAI-shaped body
function expectError(name, r, status, want = {}) {
    check(`${name}: ${status}`, r.status === status, `got ${r.status} ${r.body.slice(0, 200)}`);
    check(`${name}: OpenAI error shape`, isOpenAIError(r.json), r.body.slice(0, 300));
    for (const [k, v] of Object.entries(want)) eq(`${name}: error.${k}`, r.json?.error?.[k], v);
}

// A streaming completion on its own connection; resolves once the first
// data event is in: {res, req, status, body (a growing string)}.
function openStream(body, port = PORT, key = KEY) {
    return new Promise((resolve, reject) => {
        const headers = { 'content-type': 'application/json' };
        if (key) headers.authorization = `Bearer ${key}`;
        const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/v1/completions', headers, agent: false });
        req.on('error', reject);
        req.on('response', (res) => {
            const s = { res, req, body: '', status: res.statusCode };
            res.on('error', () => {});
            res.setEncoding('utf8');
            let first = true;
            res.on('data', (d) => {
                s.body += d;
                if (first && s.body.includes('data: ')) first = false, resolve(s);
            });
            res.on('end', () => first && resolve(s));
        });
        req.end(JSON.stringify({ ...body, stream: true }));
    });
}

// A socket that sends `parts` with gaps and then nothing more; resolves with
// the seconds from its last byte until the server closed it (or null after maxS).
function slowClient(parts, gapMs, maxS) {
    return new Promise((resolve) => {
        const sock = net.connect(PORT_B, '127.0.0.1');
        let last = 0;
        const timer = setTimeout(() => { sock.destroy(); resolve(null); }, maxS * 1000);
        sock.on('error', () => {});
        sock.on('close', () => { clearTimeout(timer); resolve((Date.now() - last) / 1000); });
        sock.on('data', () => {});
        sock.on('connect', async () => {
            for (const p of parts) {
                if (sock.destroyed) return;
                sock.write(p);
                last = Date.now();
                await sleep(gapMs);
            }
        });
    });
}

await test('health and models', async () => {
    let r = await request('GET', '/health', { key: null });
    eq('/health: 200 ok without a key', [r.status, r.json?.status], [200, 'ok']);
    r = await request('GET', '/v1/models');
    eq('/v1/models', [r.status, r.json?.object, r.json?.data?.map((m) => m.id)], [200, 'list', [NAME]]);
    r = await request('GET', `/v1/models/${NAME}`);
    eq('/v1/models/NAME', [r.status, r.json?.id, r.json?.object], [200, NAME, 'model']);
    expectError('/v1/models/unknown', await request('GET', '/v1/models/unknown'), 404);
});

await test('bad requests', async () => {
    const post = (body) => request('POST', '/v1/completions', { body });
    expectError('bad JSON', await post('{"prompt": "x", '), 400);
    expectError('body not an object', await post('[1, 2]'), 400);
    expectError('empty body', await post(''), 400);
    expectError('no prompt', await post({ model: NAME, max_tokens: 3 }), 400, { param: 'prompt' });
    expectError('temperature "hot"', await post({ ...ok, temperature: 'hot' }), 400, { param: 'temperature' });
    expectError('temperature 1e999 (infinite)', await post('{"prompt": "x", "temperature": 1e999}'), 400, { param: 'temperature' });
    expectError('temperature -1', await post({ ...ok, temperature: -1 }), 400, { param: 'temperature' });
    expectError('max_tokens -1', await post({ ...ok, max_tokens: -1 }), 400, { param: 'max_tokens' });
    expectError('max_tokens 2.5', await post({ ...ok, max_tokens: 2.5 }), 400, { param: 'max_tokens' });
    expectError('max_tokens beyond the context', await post({ ...ok, max_tokens: 100000 }), 400, { param: 'max_tokens' });
    expectError('top_p 2', await post({ ...ok, top_p: 2 }), 400, { param: 'top_p' });
    expectError('n 0', await post({ ...ok, n: 0 }), 400, { param: 'n' });
    expectError('stream "yes"', await post({ ...ok, stream: 'yes' }), 400, { param: 'stream' });
    expectError('stop 5', await post({ ...ok, stop: 5 }), 400, { param: 'stop' });
    expectError('logprobs 99', await post({ ...ok, logprobs: 99 }), 400, { param: 'logprobs' });
    expectError('token id outside the vocabulary', await post({ ...ok, prompt: [1, 99999999] }), 400, { param: 'prompt' });
    expectError('chat without messages', await request('POST', '/v1/chat/completions', { body: { model: NAME } }), 400,
        { param: 'messages' });
    expectError('unknown model', await post({ ...ok, model: 'gpt-4o' }), 404, { code: 'model_not_found', param: 'model' });
    const big = JSON.stringify({ ...ok, prompt: 'x'.repeat(MAX_BODY + 1000) });
    expectError('body over --max-body', await post(big), 413);
});

await test('API key', async () => {
    expectError('no API key', await request('POST', '/v1/completions', { body: ok, key: null }), 401);
    const r = await request('POST', '/v1/completions', { body: ok, key: 'wrong' });
    expectError('wrong API key', r, 401);
    eq('wrong API key: WWW-Authenticate', r.headers['www-authenticate'], 'Bearer');
    expectError('wrong API key (one character longer)', await request('GET', '/v1/models', { key: KEY + 'x' }), 401);
    expectError('no API key on /v1/models', await request('GET', '/v1/models', { key: null }), 401);
    eq('/metrics needs no key', (await request('GET', '/metrics', { key: null })).status, 200);
});

await test('endpoints and methods', async () => {
    expectError('unknown endpoint', await request('GET', '/v1/nothing'), 404);
    expectError('unknown endpoint (POST)', await request('POST', '/v2/completions', { body: ok }), 404);
    expectError('GET /v1/completions', await request('GET', '/v1/completions'), 405);
    expectError('POST /v1/models', await request('POST', '/v1/models', { body: {} }), 405);
    expectError('DELETE /v1/chat/completions', await request('DELETE', '/v1/chat/completions'), 405);
});

await test('metrics', async () => {
    const r = await request('GET', '/metrics', { key: null });
    check('/metrics: Prometheus text', r.status === 200 && /^text\/plain/.test(r.headers['content-type']), r.headers['content-type']);
    const names = ['requests_total', 'requests_rejected_total', 'request_errors_total', 'requests_cancelled_total',
        'prompt_tokens_total', 'generation_tokens_total', 'queue_depth', 'running_sequences', 'kv_pages_used',
        'kv_pages_total', 'batch_tokens', 'step_seconds', 'tokens_per_second'].map((n) => 'lightmoe_' + n);
    const m0 = await metrics();
    const missing = names.filter((n) => !(n in m0));
    check('/metrics: every metric', missing.length === 0, `missing ${missing}`);
    check('/metrics: TYPE lines', /# TYPE lightmoe_requests_total counter/.test(r.body) && /# TYPE lightmoe_queue_depth gauge/.test(r.body));
    eq('/metrics: a completion', (await request('POST', '/v1/completions', { body: ok })).status, 200);
    await request('POST', '/v1/completions', { body: '{' });
    const m1 = await metrics();
    eq('/metrics: requests_total +1', m1.lightmoe_requests_total - m0.lightmoe_requests_total, 1);
    check('/metrics: prompt_tokens_total moved', m1.lightmoe_prompt_tokens_total > m0.lightmoe_prompt_tokens_total);
    check('/metrics: generation_tokens_total moved', m1.lightmoe_generation_tokens_total > m0.lightmoe_generation_tokens_total);
    eq('/metrics: request_errors_total +1', m1.lightmoe_request_errors_total - m0.lightmoe_request_errors_total, 1);
    check('/metrics: kv_pages_total > 0', m1.lightmoe_kv_pages_total > 0);
});

// Slow clients are dropped after --timeout (server B) while the server answers others;
// they run while the next cases do.
const slow = Promise.all([
    // request line and headers byte by byte, never finished
    slowClient([...'POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty'], 20, TIMEOUT + 6),
    // full headers, part of the body, then nothing
    slowClient(['POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
        'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n', '{"prompt": "The'], 100, TIMEOUT + 6),
]);

await test('client hangs up mid-stream', async () => {
    const m0 = await metrics();
    const s = await openStream({ model: NAME, prompt: 'Tonight', max_tokens: 2000, temperature: 0, n: 8 });
    s.req.destroy();  // hang up after the first event
    const m = await waitMetrics((m) => m.lightmoe_requests_cancelled_total > m0.lightmoe_requests_cancelled_total &&
        m.lightmoe_running_sequences === 0);
    eq('hang-up: requests_cancelled_total +1', m.lightmoe_requests_cancelled_total - m0.lightmoe_requests_cancelled_total, 1);
    eq('hang-up: running_sequences back to 0 within 1 s', m.lightmoe_running_sequences, 0);
    eq('hang-up: KV pages freed', m.lightmoe_kv_pages_used, 0);
    check('hang-up: it was cancelled, not finished', m.lightmoe_generation_tokens_total - m0.lightmoe_generation_tokens_total < 8 * 2000);
});

await test('client hangs up while waiting for a whole answer', async () => {
    const m0 = await metrics();
    const req = http.request({ host: '127.0.0.1', port: PORT, method: 'POST', path: '/v1/completions', agent: false,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` } });
    req.on('error', () => {});
    req.end(JSON.stringify({ model: NAME, prompt: 'Tonight', max_tokens: 2000, temperature: 0, n: 8 }));
    await sleep(300);
    req.destroy();
    const m = await waitMetrics((m) => m.lightmoe_requests_cancelled_total > m0.lightmoe_requests_cancelled_total &&
        m.lightmoe_running_sequences === 0);
    eq('hang-up (not streamed): requests_cancelled_total +1', m.lightmoe_requests_cancelled_total - m0.lightmoe_requests_cancelled_total, 1);
    eq('hang-up (not streamed): running_sequences back to 0 within 1 s', m.lightmoe_running_sequences, 0);
});

await test('full queue: 429', async () => {
    // server B runs one request at a time and queues none: n=16 long choices keep it busy for seconds
    const s = await openStream({ prompt: 'Tonight', max_tokens: 2000, temperature: 0, n: 16 }, PORT_B, null);
    eq('busy server: the long request runs', s.status, 200);
    const r = await request('POST', '/v1/completions', { body: { prompt: 'Hi', max_tokens: 2 }, port: PORT_B, key: null });
    expectError('full queue', r, 429, { type: 'rate_limit_error' });
    check('full queue: Retry-After', Number(r.headers['retry-after']) >= 1, JSON.stringify(r.headers));
    const m = await metrics(PORT_B);
    eq('full queue: requests_rejected_total', m.lightmoe_requests_rejected_total, 1);
    s.req.destroy();
    let r2, t0 = Date.now();
    do {
        await sleep(50);
        r2 = await request('POST', '/v1/completions', { body: { prompt: 'Hi', max_tokens: 2 }, port: PORT_B, key: null });
    } while (r2.status === 429 && Date.now() - t0 < 2000);
    eq('full queue: served again once the long request is gone', r2.status, 200);
});

await test('slow clients', async () => {
    const t0 = Date.now();
    const r = await request('POST', '/v1/completions', { body: ok, port: PORT_B, key: null });
    check('slow clients: others are served meanwhile', r.status === 200 && Date.now() - t0 < 2000, `${r.status}`);
    const [headers, body] = await slow;
    check(`slow headers: dropped about ${TIMEOUT} s after the last byte`, headers !== null && headers > TIMEOUT - 0.5 && headers < TIMEOUT + 3, `${headers} s`);
    check(`unfinished body: dropped about ${TIMEOUT} s after the last byte`, body !== null && body > TIMEOUT - 0.5 && body < TIMEOUT + 3, `${body} s`);
});

await test('still serving', async () => {
    const r = await request('POST', '/v1/completions', { body: ok });
    eq('after all of the above: a normal request', [r.status, r.json?.choices?.length], [200, 1]);
    // the gauges are set after the step that finished it
    const m = await waitMetrics((m) => m.lightmoe_running_sequences + m.lightmoe_kv_pages_used === 0);
    eq('after all of the above: nothing running', [m.lightmoe_running_sequences, m.lightmoe_queue_depth, m.lightmoe_kv_pages_used], [0, 0, 0]);
});

finish();
