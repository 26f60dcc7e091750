// Load benchmark of `lightmoe serve` (not part of `make test`):
//
//   node bench/serve_load.mjs [--bin build/lightmoe] [--model models/sotu-moe]
//       [--clients 64] [--requests 20] [--duration S] [--max-tokens 32]
//       [--temp 0.8] [--seed 1234] [--words 40] [--server-args "..."]
//
// Starts the server on a free loopback port, then --clients clients each send
// --requests streamed completions one after another (or keep sending until
// --duration seconds have passed) through the official OpenAI client
// (data/npm, `make testdata`). Prompts come from `bash bench/make_prompts.sh`.
// Records time to first token, the gaps between streamed chunks (inter-token
// latency) and generated tokens per second. Then runs the same prompts with
// `lightmoe generate --prompts` (same max tokens, temperature and seed: it takes
// one seed for all prompts, so every request uses that seed too, and
// --parallel = --clients), checks that every answer is the offline answer, and
// compares the throughput.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
process.chdir(root);
const OpenAI = (await import(new URL('../data/npm/node_modules/openai/index.mjs', import.meta.url))).default;

const opt = { bin: 'build/lightmoe', model: 'models/sotu-moe', clients: 64, requests: 20, duration: 0,
    'max-tokens': 32, temp: 0.8, seed: 1234, words: 40, 'server-args': '' };
for (let i = 2; i < process.argv.length; i += 2) {
    const k = process.argv[i].replace(/^--/, '');
    if (!(k in opt) || i + 1 >= process.argv.length) {
        console.error(`usage: node bench/serve_load.mjs [--${Object.keys(opt).join(' V] [--')} V]`);
        process.exit(2);
    }
    opt[k] = typeof opt[k] === 'number' ? Number(process.argv[i + 1]) : process.argv[i + 1];
}
const C = opt.clients, N = opt['max-tokens'];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (xs, p) => {
    if (!xs.length) return NaN;
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const ms = (x) => `${(x * 1000).toFixed(1)} ms`;

// Prompts: enough for every request (the duration mode wraps around).
const tmp = mkdtempSync(join(tmpdir(), 'serve_load-'));
const nPrompts = opt.duration > 0 ? 4000 : C * opt.requests;
const mp = spawnSync('bash', ['bench/make_prompts.sh', String(nPrompts), String(opt.words)], { encoding: 'utf8' });
if (mp.status !== 0) throw new Error(`make_prompts.sh failed: ${mp.stderr}`);
const prompts = mp.stdout.trim().split('\n').map((l) => JSON.parse(l).prompt);

// The server.
const portFile = join(tmp, 'port');
const server = spawn(opt.bin, ['serve', '-m', opt.model, '--port', '0', '--port-file', portFile,
    ...opt['server-args'].split(' ').filter(Boolean)], { stdio: ['ignore', 'ignore', 'pipe'] });
let serverLog = '';
server.stderr.on('data', (d) => (serverLog += d));
const serverExit = new Promise((r) => server.on('exit', (code) => r(code)));
let port;
for (let i = 0; i < 600 && !port; i++) {
    await sleep(100);
    try {
        const p = Number(readFileSync(portFile, 'utf8'));
        if (p && (await fetch(`http://127.0.0.1:${p}/health`)).ok) port = p;
    } catch {}
    if (server.exitCode !== null) break;
}
if (!port) throw new Error(`the server did not start:\n${serverLog}`);
const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'none', maxRetries: 0, timeout: 600000 });
const model = (await client.models.list()).data[0].id;

// CPU seconds the server has used (Linux /proc; NaN elsewhere).
function serverCpu() {
    try {
        const f = readFileSync(`/proc/${server.pid}/stat`, 'utf8').split(') ')[1].split(' ');
        return (Number(f[11]) + Number(f[12])) / 100;  // utime + stime, in clock ticks of 1/100 s
    } catch {
        return NaN;
    }
}

// One streamed request: its timings and text.
async function one(i) {
    const t0 = performance.now();
    const r = { i, ttft: NaN, gaps: [], text: '', tokens: 0, finish: null, error: null };
    try {
        const stream = await client.completions.create({ model, prompt: prompts[i], max_tokens: N,
            temperature: opt.temp, seed: opt.seed, stream: true, stream_options: { include_usage: true } });
        let last;
        for await (const c of stream) {
            const now = performance.now();
            if (c.usage) r.tokens = c.usage.completion_tokens;
            const ch = c.choices[0];
            if (!ch) continue;
            if (ch.text) {
                if (last === undefined) r.ttft = (now - t0) / 1000;
                else r.gaps.push((now - last) / 1000);
                last = now;
                r.text += ch.text;
            }
            if (ch.finish_reason) r.finish = ch.finish_reason;
        }
        r.seconds = (performance.now() - t0) / 1000;
    } catch (e) {
        r.error = String(e);
    }
    return r;
}

await one(0);  // warm-up, not counted
console.log(`${C} clients x ${opt.duration > 0 ? `${opt.duration} s` : `${opt.requests} requests`}, ` +
    `max_tokens ${N}, temperature ${opt.temp}, seed ${opt.seed}, prompts of ${opt.words} words, server ${opt.bin} ...`);
const results = [];
let next = 0;
const cpu0 = process.cpuUsage(), srv0 = serverCpu();
const t0 = performance.now();
const deadline = opt.duration > 0 ? t0 + opt.duration * 1000 : Infinity;
await Promise.all(Array.from({ length: C }, async (_, c) => {
    for (let k = 0; opt.duration > 0 ? performance.now() < deadline : k < opt.requests; k++) {
        const i = opt.duration > 0 ? next++ % prompts.length : c * opt.requests + k;
        results.push(await one(i));
    }
}));
const wall = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0), clientCpu = (cpu.user + cpu.system) / 1e6, srvCpu = serverCpu() - srv0;
server.kill('SIGTERM');
const serverRc = await serverExit;

const ok = results.filter((r) => !r.error);
const genTokens = ok.reduce((s, r) => s + r.tokens, 0);
const ttft = ok.map((r) => r.ttft), itl = ok.flatMap((r) => r.gaps);
const tokensPerChunk = genTokens / ok.reduce((s, r) => s + r.gaps.length + 1, 0);

// The same work offline: each prompt once, in the order of `results`.
const used = [...new Set(results.map((r) => r.i))].sort((a, b) => a - b);
const file = join(tmp, 'prompts.jsonl');
writeFileSync(file, used.map((i) => JSON.stringify({ prompt: prompts[i] })).join('\n') + '\n');
const gen = spawnSync(opt.bin, ['generate', '-m', opt.model, '--prompts', file, '-n', String(N), '--temp',
    String(opt.temp), '--seed', String(opt.seed), '--parallel', String(C)], { encoding: 'utf8', maxBuffer: 1 << 30 });
if (gen.status !== 0) throw new Error(`lightmoe generate failed: ${gen.stderr}`);
const offline = new Map(gen.stdout.trim().split('\n').map((l) => JSON.parse(l)).map((o) => [used[o.index], o.text]));
const m = gen.stderr.match(/(\d+) prompt tokens, (\d+) generated in ([\d.]+) s/);
const offGen = Number(m[2]), offSeconds = Number(m[3]), offTps = offGen / offSeconds;
const mismatched = ok.filter((r) => r.text !== offline.get(r.i));
rmSync(tmp, { recursive: true, force: true });

const tps = genTokens / wall;
console.log(`
requests: ${results.length} (${results.length - ok.length} failed), ${genTokens} tokens generated in ${wall.toFixed(2)} s
  throughput: ${tps.toFixed(0)} generated tok/s, ${(ok.length / wall).toFixed(1)} requests/s
  time to first token: p50 ${ms(pct(ttft, 50))}, p99 ${ms(pct(ttft, 99))}
  CPU during the run: server ${srvCpu.toFixed(1)} s, this client ${clientCpu.toFixed(1)} s (${cpus().length} cores)
  inter-token latency (gaps between chunks, ${tokensPerChunk.toFixed(2)} tokens/chunk): p50 ${ms(pct(itl, 50))}, p99 ${ms(pct(itl, 99))}
offline (lightmoe generate --prompts, ${used.length} prompts, --parallel ${C}): ${offGen} tokens in ${offSeconds.toFixed(2)} s = ${offTps.toFixed(0)} tok/s
  server / offline throughput: ${(tps / offTps).toFixed(2)}
answers equal to the offline answer: ${ok.length - mismatched.length} of ${ok.length}
server exit status after SIGTERM: ${serverRc}`);
for (const r of results.filter((r) => r.error).slice(0, 3)) console.log(`  failed: ${r.error}`);
for (const r of mismatched.slice(0, 3))
    console.log(`  differs (prompt ${r.i}): server ${JSON.stringify(r.text)}\n           offline ${JSON.stringify(offline.get(r.i))}`);
process.exitCode = results.length === ok.length && mismatched.length === 0 && serverRc === 0 ? 0 : 1;
