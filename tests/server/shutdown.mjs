// Shutdown: SIGTERM to the server (SERVER_PID on PORT) while a streamed
// request is in flight. SIGNALS=1: the request must complete (every choice
// finishes, the stream ends with "data: [DONE]"). SIGNALS=2: a second SIGTERM
// cancels it: the stream ends with an OpenAI-shaped error event and [DONE].
// Either way new requests meanwhile get 503. tests/server.sh then checks that
// the process exited 0 and printed "stopped".
import http from 'node:http';
import { KEY, NAME, PORT, check, eq, finish, isOpenAIError, request, sleep, test } from './common.mjs';

const PID = Number(process.env.SERVER_PID), SIGNALS = Number(process.env.SIGNALS || 1);
const what = SIGNALS === 1 ? 'SIGTERM' : 'SIGTERM twice';

await test(what, async () => {
    const body = { model: NAME, prompt: 'Tonight', max_tokens: 1500, temperature: 0, n: 4, stream: true };
    const headers = { 'content-type': 'application/json' };
    if (KEY) headers.authorization = `Bearer ${KEY}`;
    let text = '', ended = false, signalled = false;
    const first = new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port: PORT, method: 'POST', path: '/v1/completions', agent: false, headers },
            (res) => {
                res.setEncoding('utf8');
                res.on('data', (d) => {
                    text += d;
                    if (text.includes('data: ')) resolve();
                });
                res.on('end', () => { ended = true; resolve(); });
                res.on('error', reject);
            });
        req.on('error', reject);
        req.end(JSON.stringify(body));
    });
    await first;
    if (!ended) {
        process.kill(PID, 'SIGTERM');  // with the request in flight
        signalled = true;
    }
    // what the server answers meanwhile (the listening socket may be gone once the stream is over)
    await sleep(150);  // the server looks for signals every 50 ms
    let health = null, post = null;
    try {
        health = (await request('GET', '/health', { key: KEY ?? null })).status;
        post = await request('POST', '/v1/completions', { body: { model: NAME, prompt: 'x', max_tokens: 1 } });
    } catch {}
    if (SIGNALS === 2) process.kill(PID, 'SIGTERM');
    for (let t = 0; t < 1000 && !ended; t++) await sleep(20);  // the rest of the stream (up to 20 s)

    check(`${what}: the signal went out while the request streamed`, signalled);
    check(`${what}: the stream ends with data: [DONE]`, /data: \[DONE\]\n\n$/.test(text), text.slice(-200));
    const events = text.split('\n\n').filter((e) => e.startsWith('data: {')).map((e) => JSON.parse(e.slice(6)));
    const finished = events.flatMap((e) => e.choices ?? []).filter((c) => c.finish_reason).map((c) => c.index).sort();
    const errors = events.filter((e) => e.error);
    if (SIGNALS === 1) {
        eq(`${what}: every choice finished`, finished, [0, 1, 2, 3]);
        eq(`${what}: no error event`, errors.length, 0);
    } else {
        eq(`${what}: one error event, last before [DONE]`, [errors.length, events.at(-1)?.error !== undefined], [1, true]);
        check(`${what}: the error event in OpenAI's shape`, isOpenAIError(errors[0]), JSON.stringify(errors[0]));
    }
    if (health !== null) {
        eq(`${what}: /health 503 while shutting down`, health, 503);
        check(`${what}: new requests 503 (OpenAI shape) while shutting down`, post?.status === 503 && isOpenAIError(post.json),
            `${post?.status} ${post?.body}`);
    } else console.log(`SKIP: ${what}: 503 while shutting down (the stream was over first)`);
});

finish();
