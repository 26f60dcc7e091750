// Helpers shared by the server tests (tests/server.sh runs them).
import http from 'node:http';
import { spawnSync } from 'node:child_process';

export const BIN = process.env.LIGHTMOE_BIN || 'build/lightmoe';
export const MODEL = process.env.MODEL || 'models/sotu-moe';
export const PORT = Number(process.env.PORT);  // server A (--api-key, short --timeout, small --max-body)
export const KEY = process.env.API_KEY;
export const NAME = MODEL.replace(/\/+$/, '').split('/').pop();  // the served model name

let failures = 0;
export function check(name, ok, detail = '') {
    if (ok) console.log(`ok   ${name}`);
    else {
        failures++;
        console.log(`FAIL ${name}${detail ? ': ' + detail : ''}`);
    }
    return ok;
}
export function eq(name, got, want) {
    const g = JSON.stringify(got), w = JSON.stringify(want);
    return check(name, g === w, `got ${g}, want ${w}`);
}
// Runs one test case; an exception fails it (and the others still run).
export async function test(name, fn) {
    try {
        await fn();
    } catch (e) {
        check(name, false, `threw ${e?.stack || e}`);
    }
}
export function finish() {
    process.exitCode = failures ? 1 : 0;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// One HTTP request on a fresh connection: {status, headers, body, json}.
export function request(method, path, { body, headers = {}, port = PORT, key = KEY } = {}) {
    const h = { ...headers };
    if (key) h.authorization = `Bearer ${key}`;
    let data = body;
    if (data !== undefined && typeof data !== 'string' && !Buffer.isBuffer(data)) data = JSON.stringify(data);
    if (data !== undefined) h['content-type'] ??= 'application/json';
    return new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, method, path, headers: h, agent: false }, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => {
                const text = Buffer.concat(chunks).toString();
                let json = null;
                try { json = JSON.parse(text); } catch {}
                resolve({ status: res.statusCode, headers: res.headers, body: text, json });
            });
            res.on('error', reject);
        });
        req.on('error', reject);
        req.end(data);
    });
}

// The server's /metrics as {name: value}.
export async function metrics(port = PORT) {
    const r = await request('GET', '/metrics', { port, key: null });
    const m = {};
    for (const line of r.body.split('\n')) {
        const f = line.match(/^([a-z_]+) (\S+)$/);
        if (f) m[f[1]] = Number(f[2]);
    }
    return m;
}

// Polls /metrics until pred(metrics) holds or ms pass; returns the last metrics.
export async function waitMetrics(pred, { port = PORT, ms = 1000 } = {}) {
    const t0 = Date.now();
    let m = await metrics(port);
    while (!pred(m) && Date.now() - t0 < ms) {
        await sleep(50);
        m = await metrics(port);
    }
    return m;
}

// The offline answer: `lightmoe generate -p TEXT -n N --temp T --seed S`:
// {text, promptTokens, genTokens} (counts from its closing stderr line).
export function offline(prompt, { n, temp, seed, extra = [] }) {
    const r = spawnSync(BIN, ['generate', '-m', MODEL, '-p', prompt, '-n', String(n), '--temp', String(temp),
        '--seed', String(seed), ...extra], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`lightmoe generate failed (${r.status}): ${r.stderr}`);
    const m = r.stderr.match(/(\d+) prompt tokens, (\d+) generated/);
    return { text: r.stdout.replace(/\n$/, ''), promptTokens: m && Number(m[1]), genTokens: m && Number(m[2]) };
}

// An error response in OpenAI's shape: {"error": {message, type, param, code}}.
export function isOpenAIError(j) {
    const e = j?.error;
    return !!e && typeof e.message === 'string' && e.message.length > 0 && typeof e.type === 'string' &&
        'param' in e && (e.param === null || typeof e.param === 'string') &&
        'code' in e && (e.code === null || typeof e.code === 'string');
}
