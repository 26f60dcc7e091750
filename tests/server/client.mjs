// lightmoe serve through the official OpenAI client (the openai npm package,
// fetched into data/npm by tools/fetch_testdata.sh): completions and chat,
// streamed and not, n choices, stop strings, seeds (checked against
// `lightmoe generate`), usage, logprobs, echo. Run by tests/server.sh.
import { readFileSync } from 'node:fs';
import { BIN, KEY, MODEL, NAME, PORT, check, eq, finish, offline, test } from './common.mjs';

const OpenAI = (await import(new URL('../../data/npm/node_modules/openai/index.mjs', import.meta.url))).default;
const client = new OpenAI({ baseURL: `http://127.0.0.1:${PORT}/v1`, apiKey: KEY, maxRetries: 0, timeout: 30000 });
// CHAT=require: the model must have a chat template; CHAT=absent: it has none
// yet, and chat must answer 400 saying so (tests/server.sh decides which).
const CHAT = process.env.CHAT || 'require';

const P = 'My fellow Americans,';  // long answers at these seeds: no early end of text
const base = { model: NAME, prompt: P, max_tokens: 24, temperature: 0.8, seed: 2 };

// A streamed response as {chunks, text: [per choice], finish: [per choice], usage}.
async function collect(stream, chat = false) {
    const out = { chunks: [], text: [], finish: [], roles: [], usage: undefined, twice: false };
    for await (const c of stream) {
        out.chunks.push(c);
        if (c.usage) out.usage = c.usage;
        for (const ch of c.choices) {
            const i = ch.index;
            out.text[i] ??= '';
            out.text[i] += chat ? (ch.delta?.content ?? '') : ch.text;
            if (chat && ch.delta?.role) out.roles[i] = ch.delta.role;
            if (ch.finish_reason) {
                out.twice ||= out.finish[i] !== undefined;  // a choice finishes once
                out.finish[i] = ch.finish_reason;
            }
        }
    }
    return out;
}

// ------------------------------------------------------------ completions ---

const off = offline(P, { n: 24, temp: 0.8, seed: 2 });
let plain;  // the non-streamed answer of `base`

await test('completions', async () => {
    const r = await client.completions.create(base);
    plain = r.choices[0].text;
    eq('completions: object', r.object, 'text_completion');
    eq('completions: model', r.model, NAME);
    check('completions: id', /^cmpl-/.test(r.id), r.id);
    eq('completions: one choice, index 0', r.choices.map((c) => c.index), [0]);
    eq('completions: text equals `lightmoe generate` with the same seed', plain, off.text);
    eq('completions: max_tokens reached: finish_reason length', r.choices[0].finish_reason, 'length');
    eq('completions: usage', r.usage, { prompt_tokens: off.promptTokens, completion_tokens: 24, total_tokens: off.promptTokens + 24 });
    eq('completions: logprobs null when not asked', r.choices[0].logprobs, null);
});

await test('seeds', async () => {
    const again = await client.completions.create(base);
    eq('seed: the same seed gives the same text', again.choices[0].text, plain);
    const other = await client.completions.create({ ...base, seed: 3 });
    check('seed: another seed gives other text', other.choices[0].text !== plain, other.choices[0].text);
    const o3 = offline(P, { n: 24, temp: 0.8, seed: 3 });
    eq('seed: seed 3 equals `lightmoe generate --seed 3`', other.choices[0].text, o3.text);
});

await test('completions stream', async () => {
    const s = await collect(await client.completions.create({ ...base, stream: true }));
    eq('stream: text equals the non-streamed text', s.text[0], plain);
    eq('stream: finish_reason', s.finish[0], 'length');
    check('stream: several chunks', s.chunks.length > 3, `${s.chunks.length} chunks`);
    check('stream: one finish_reason', !s.twice);
    check('stream: chunks share one id', new Set(s.chunks.map((c) => c.id)).size === 1);
    check('stream: no usage unless asked', s.chunks.every((c) => c.usage == null));
    eq('stream: the finish chunk is the last', s.chunks.at(-1).choices[0]?.finish_reason, 'length');
});

await test('stream_options.include_usage', async () => {
    const s = await collect(await client.completions.create({ ...base, stream: true, stream_options: { include_usage: true } }));
    const last = s.chunks.at(-1);
    eq('include_usage: the last chunk has no choices', last.choices, []);
    eq('include_usage: its usage', last.usage, { prompt_tokens: off.promptTokens, completion_tokens: 24, total_tokens: off.promptTokens + 24 });
    check('include_usage: the other chunks have usage null', s.chunks.slice(0, -1).every((c) => c.usage === null));
    eq('include_usage: text unchanged', s.text[0], plain);
});

await test('n choices', async () => {
    const r = await client.completions.create({ ...base, n: 4 });
    eq('n=4: indices', r.choices.map((c) => c.index).sort(), [0, 1, 2, 3]);
    const texts = r.choices.map((c) => c.text);
    eq('n=4: distinct choices', new Set(texts).size, 4);
    eq('n=4: choice 0 equals `lightmoe generate` with the seed', r.choices.find((c) => c.index === 0).text, off.text);
    eq('n=4: usage counts every choice', r.usage.completion_tokens, 4 * 24);
    eq('n=4: prompt tokens counted once', r.usage.prompt_tokens, off.promptTokens);
    const s = await collect(await client.completions.create({ ...base, n: 4, stream: true }));
    eq('n=4 stream: the same texts per index', s.text, r.choices.sort((a, b) => a.index - b.index).map((c) => c.text));
    eq('n=4 stream: every choice finishes', s.finish, ['length', 'length', 'length', 'length']);
    check('n=4 stream: each finishes once', !s.twice);
});

await test('stop strings', async () => {
    const long = (await client.completions.create({ ...base, max_tokens: 40 })).choices[0].text;
    // a stop string from the middle of the text: the answer ends just before its first occurrence
    const mid = Math.floor(long.length / 2), stop = long.slice(mid, mid + 3), at = long.indexOf(stop);
    check('stop: the unconstrained text is long enough', long.length > 20, JSON.stringify(long));
    const r = await client.completions.create({ ...base, max_tokens: 40, stop: [stop, 'never-in-text'] });
    const text = r.choices[0].text;
    eq(`stop: text ends before ${JSON.stringify(stop)}`, text, long.slice(0, at));
    check('stop: the stop string is not in the text', !text.includes(stop));
    eq('stop: finish_reason stop', r.choices[0].finish_reason, 'stop');
    const s = await collect(await client.completions.create({ ...base, max_tokens: 40, stop, stream: true }));
    eq('stop stream: the same text', s.text[0], text);
    eq('stop stream: finish_reason stop', s.finish[0], 'stop');
});

await test('max_tokens', async () => {
    const r = await client.completions.create({ model: NAME, prompt: P, max_tokens: 5, temperature: 0 });
    eq('max_tokens 5: completion_tokens', r.usage.completion_tokens, 5);
    eq('max_tokens 5: finish_reason length', r.choices[0].finish_reason, 'length');
    eq('max_tokens 5 greedy: equals `lightmoe generate --temp 0`', r.choices[0].text, offline(P, { n: 5, temp: 0, seed: 1 }).text);
});

await test('completions logprobs', async () => {
    const r = await client.completions.create({ model: NAME, prompt: P, max_tokens: 8, temperature: 0, logprobs: 2 });
    const c = r.choices[0], lp = c.logprobs;
    eq('logprobs: one token per generated token', lp.tokens.length, 8);
    eq('logprobs: token_logprobs per token', lp.token_logprobs.length, 8);
    eq('logprobs: the tokens make the text', lp.tokens.join(''), c.text);
    let off = 0, ok = true, greedy = true;
    lp.tokens.forEach((t, i) => {
        ok &&= lp.text_offset[i] === off;
        off += t.length;
        const top = lp.top_logprobs[i], vals = Object.values(top);
        ok &&= vals.length >= 1 && vals.length <= 2 && lp.token_logprobs[i] <= 0;
        // greedy: the chosen token is the most likely one
        greedy &&= t in top && Math.abs(lp.token_logprobs[i] - Math.max(...vals)) < 1e-5;
    });
    check('logprobs: text_offset, at most 2 alternatives, logprob <= 0', ok, JSON.stringify(lp));
    check('logprobs: greedy picks the top alternative', greedy, JSON.stringify(lp));
    const e = await client.completions.create({ model: NAME, prompt: P, max_tokens: 4, temperature: 0, logprobs: 2, echo: true });
    eq('logprobs with echo: offsets start after the prompt', e.choices[0].logprobs.text_offset[0], P.length);
});

await test('echo', async () => {
    const r = await client.completions.create({ ...base, echo: true });
    eq('echo: prompt + text', r.choices[0].text, P + plain);
    const s = await collect(await client.completions.create({ ...base, echo: true, stream: true }));
    eq('echo stream: the first chunk is the prompt', s.chunks[0].choices[0].text, P);
    eq('echo stream: prompt + text', s.text[0], P + plain);
});

await test('token id prompt', async () => {
    const r = await client.completions.create({ ...base, prompt: [[1, 2, 3]], max_tokens: 2 });
    eq('token ids: prompt_tokens', r.usage.prompt_tokens, 3);
});

await test('client errors', async () => {
    const bad = new OpenAI({ baseURL: `http://127.0.0.1:${PORT}/v1`, apiKey: 'wrong', maxRetries: 0 });
    const err = async (p) => { try { await p; return null; } catch (e) { return e; } };
    let e = await err(bad.completions.create(base));
    check('client: wrong key is AuthenticationError 401', e instanceof OpenAI.AuthenticationError && e.status === 401, String(e));
    e = await err(client.completions.create({ ...base, model: 'gpt-4o' }));
    check('client: unknown model is NotFoundError 404 model_not_found',
        e instanceof OpenAI.NotFoundError && e.code === 'model_not_found', String(e));
    e = await err(client.completions.create({ ...base, temperature: 'hot' }));
    check('client: bad temperature is BadRequestError 400 (param temperature)',
        e instanceof OpenAI.BadRequestError && e.param === 'temperature', String(e));
    const models = [];
    for await (const m of client.models.list()) models.push(m.id);
    eq('client: models.list', models, [NAME]);
    eq('client: models.retrieve', (await client.models.retrieve(NAME)).id, NAME);
});

// ------------------------------------------------------------------- chat ---

const messages = [{ role: 'system', content: 'You are a president.' }, { role: 'user', content: 'How is the Union?' }];
const chatBase = { model: NAME, messages, max_tokens: 16, temperature: 0.8, seed: 5 };

await test('chat', async () => {
    let r;
    try {
        r = await client.chat.completions.create(chatBase);
    } catch (e) {
        const noTemplate = e.status === 400 && /chat template/.test(e.message);
        if (CHAT === 'absent' && noTemplate) {
            check('chat without a template: 400 naming the missing template', true);
            console.log(`SKIP: chat tests (${MODEL} has no chat template yet)`);
            return;
        }
        if (noTemplate) check('chat', false, `${MODEL} has no chat template, but one is expected now: ${e.message}`);
        else check('chat', false, String(e));
        return;
    }
    check('chat: the model has a chat template', CHAT === 'require', 'tests/server.sh thought it had none');
    const c = r.choices[0];
    eq('chat: object', r.object, 'chat.completion');
    check('chat: id', /^chatcmpl-/.test(r.id), r.id);
    eq('chat: role', c.message.role, 'assistant');
    check('chat: content', typeof c.message.content === 'string', JSON.stringify(c.message));
    check('chat: finish_reason', ['stop', 'length'].includes(c.finish_reason), c.finish_reason);
    check('chat: usage', r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0 &&
        r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens, JSON.stringify(r.usage));
    eq('chat: the same seed gives the same answer', (await client.chat.completions.create(chatBase)).choices[0].message.content, c.message.content);

    const s = await collect(await client.chat.completions.create({ ...chatBase, stream: true, stream_options: { include_usage: true } }), true);
    eq('chat stream: object', s.chunks[0].object, 'chat.completion.chunk');
    eq('chat stream: role in the first delta', s.roles[0], 'assistant');
    eq('chat stream: content equals the non-streamed one', s.text[0], c.message.content);
    eq('chat stream: finish_reason', s.finish[0], c.finish_reason);
    eq('chat stream: usage chunk', s.usage, r.usage);
    eq('chat stream: the usage chunk has no choices', s.chunks.at(-1).choices, []);

    const n = await client.chat.completions.create({ ...chatBase, n: 3, max_tokens: 24 });
    eq('chat n=3: indices', n.choices.map((x) => x.index).sort(), [0, 1, 2]);
    check('chat n=3: the choices differ', new Set(n.choices.map((x) => x.message.content)).size > 1, JSON.stringify(n.choices));

    const l = await client.chat.completions.create({ ...chatBase, logprobs: true, top_logprobs: 2 });
    const content = l.choices[0].logprobs?.content;
    check('chat logprobs: one entry per token', content?.length === l.usage.completion_tokens, JSON.stringify(l.choices[0]));
    check('chat logprobs: token, logprob, bytes, at most 2 top_logprobs', content?.every((t) =>
        typeof t.token === 'string' && t.logprob <= 0 && Array.isArray(t.bytes) &&
        t.top_logprobs.length >= 1 && t.top_logprobs.length <= 2 &&
        t.top_logprobs.every((a) => typeof a.token === 'string' && a.logprob <= 0)));
});

const { version } = JSON.parse(readFileSync(new URL('../../data/npm/node_modules/openai/package.json', import.meta.url)));
console.log(`(openai ${version}, server ${BIN})`);
finish();
