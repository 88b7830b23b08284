// A scripted stand-in for the Anthropic Messages API, so the real Claude Agent SDK runs with no
// key and no network (the demo and the tests). Start it with startFakeAnthropic(); point the SDK
// at it with ANTHROPIC_BASE_URL. It answers POST /v1/messages (SSE or JSON) and decides what to
// say from the newest user text:
//   - "write <name.ext>" (optionally "containing <text>"): a Write tool call, then a summary
//   - "helper" / "subagent": an Agent tool call to the `helper` subagent, then a summary
//   - "run: <shell command>": a Bash tool call with that command, then a summary
//   - "think": a thinking block before the answer
//   - "fail with 500": an HTTP 500
//   - "wait <n>ms": the first answer to that prompt comes after n ms (for tests of slow turns)
//   - anything else: a short echo
//   - "read <name.ext>": a Read tool call (an error when the file is missing), then a summary
//   - "slowly" (optionally "slowly <n>ms", "<k> words"): a 40-word story (repeated to k words)
//     streamed one word per delta, n ms apart (default 150), for tests that act mid-text
//   - "ask: <question>? [<a>|<b>|...]": an AskUserQuestion call with those options; after the
//     tool result, "Answer received: <the result>"
//   - a tool result followed by more user text (a message steered into the turn): the usual
//     summary plus "(also noted: <that text>)"
// Subagent requests (header x-claude-code-agent-id) get a one-line answer.
// OpenCode is recognised by its lowercase tool names and gets its own tool shapes (write with an
// absolute filePath in its working directory, task with subagent_type "general"); its title
// requests (no tools) and its subagents (tools but no `task`) get plain one-line answers.
import http from 'node:http';

const MODEL_FALLBACK = 'claude-sonnet-4-5';

function texts(content) {
  if (typeof content === 'string') return [content];
  return (content ?? []).filter((b) => b.type === 'text').map((b) => b.text);
}

/** The newest user text that is not a system reminder, and what the assistant did after it. */
function lastTurn(messages) {
  let prompt = '';
  let idx = -1;
  messages.forEach((m, i) => {
    if (m.role !== 'user') return;
    const t = texts(m.content).filter((x) => !x.trimStart().startsWith('<system-reminder>'));
    if (t.length) {
      // The newest text: OpenCode folds a failed prompt and the next one into one message.
      prompt = t[t.length - 1];
      idx = i;
    }
  });
  // A tool result with text beside it is a message steered into the turn, not a new prompt.
  const steered = [];
  // (Beside a failed or interrupted tool call, the text is a new prompt.)
  const steeredInto = (m) =>
    Array.isArray(m.content) &&
    m.content.some((b) => b.type === 'tool_result') &&
    !m.content.some((b) => b.is_error) &&
    !texts(m.content).some((x) => x.includes('[Request interrupted'));
  while (idx > 0 && steeredInto(messages[idx])) {
    steered.unshift(prompt);
    let back = idx - 1;
    while (back >= 0 && !(messages[back].role === 'user' && texts(messages[back].content).some((x) => !x.trimStart().startsWith('<system-reminder>')) && !(Array.isArray(messages[back].content) && messages[back].content.some((b) => b.type === 'tool_result')))) back--;
    if (back < 0) break;
    const t = texts(messages[back].content).filter((x) => !x.trimStart().startsWith('<system-reminder>'));
    prompt = t[t.length - 1];
    idx = back;
  }
  const after = messages.slice(idx + 1);
  const toolUses = after.filter((m) => m.role === 'assistant').flatMap((m) => (Array.isArray(m.content) ? m.content : []).filter((b) => b.type === 'tool_use'));
  const results = after.filter((m) => m.role === 'user').flatMap((m) => (Array.isArray(m.content) ? m.content : []).filter((b) => b.type === 'tool_result'));
  return { prompt, toolUses, results, steered };
}

let counter = 0;
const id = (p) => `${p}_fake${String(++counter).padStart(6, '0')}`;

/** OpenCode's tool names and input shapes, keyed by the Claude tool they stand for. */
function openCodeTool(name, input, body) {
  const system = (Array.isArray(body.system) ? body.system.map((b) => b.text ?? '') : [body.system ?? '']).join('\n');
  const cwd = /Working directory: (.+)/.exec(system)?.[1]?.trim() ?? '/workspace';
  const abs = (p) => (p.startsWith('/') ? p : `${cwd}/${p}`);
  if (name === 'Write') return { name: 'write', input: { filePath: abs(input.file_path), content: input.content } };
  if (name === 'Read') return { name: 'read', input: { filePath: abs(input.file_path) } };
  if (name === 'Bash') return { name: 'bash', input: input };
  return { name: 'task', input: { description: input.description, prompt: input.prompt, subagent_type: 'general' } };
}

/** Decide the reply: { thinking?, text?, tool?: { name, input } }. */
export function script(body, headers) {
  const tools = (body.tools ?? []).map((t) => t.name);
  const openCode = tools.includes('write') || tools.includes('bash');
  const reply = claudeScript(body, headers, openCode && !tools.includes('task'));
  if (openCode && reply.tool) reply.tool = openCodeTool(reply.tool.name, reply.tool.input, body);
  return reply;
}

function claudeScript(body, headers, subagent) {
  if (body.output_config?.format) return { text: JSON.stringify({ title: 'Demo session' }) };
  const { prompt, toolUses, results, steered } = lastTurn(body.messages ?? []);
  // OpenCode's title generator (no tools) only ever gets text.
  if (!body.tools?.length && JSON.stringify(body.system ?? '').includes('title generator')) return { text: 'Demo session' };
  if (headers['x-claude-code-agent-id'] || subagent) return { text: `Helper here: I looked at "${prompt.slice(0, 60)}" and all is well.` };
  const lower = prompt.toLowerCase();
  const thinking = lower.includes('think') ? `The user asked: ${prompt.slice(0, 80)}. Let me plan.` : undefined;
  const write = /write\s+(?:a\s+\w+\s+)?(?:to\s+|into\s+)?([\w./-]+\.\w+)(?:\s+containing\s+([\s\S]+))?/i.exec(prompt);
  if (write && toolUses.length === 0) {
    const content = write[2]?.trim() ?? 'Old pond\nfrog jumps in\nsound of water\n';
    return { thinking, text: `I'll write ${write[1]}.`, tool: { name: 'Write', input: { file_path: write[1], content } } };
  }
  const read = /\bread\s+([\w./-]+\.\w+)/i.exec(prompt);
  if (read && toolUses.length === 0) return { thinking, text: `Reading ${read[1]}.`, tool: { name: 'Read', input: { file_path: read[1] } } };
  const run = /run:\s*([\s\S]+)$/i.exec(prompt);
  if (run && toolUses.length === 0) {
    return { thinking, text: 'Running it.', tool: { name: 'Bash', input: { command: run[1].trim(), description: 'Run the command' } } };
  }
  if ((lower.includes('helper') || lower.includes('subagent')) && toolUses.length === 0) {
    return {
      thinking,
      text: 'Let me ask the helper.',
      tool: { name: 'Agent', input: { description: 'Ask the helper', prompt: `Check this: ${prompt}`, subagent_type: 'helper', run_in_background: false } },
    };
  }
  const ask = /ask:\s*([^[]+?)\s*\[([^\]]+)\]/i.exec(prompt);
  if (ask && toolUses.length === 0) {
    const options = ask[2].split('|').map((label) => ({ label: label.trim(), description: `Choose ${label.trim()}` }));
    return { text: 'Let me ask.', tool: { name: 'AskUserQuestion', input: { questions: [{ question: ask[1].trim(), header: 'Choice', options, multiSelect: false }] } } };
  }
  if (toolUses.length) {
    const failed = results.some((r) => r.is_error);
    const noted = steered.length ? ` (also noted: ${steered.join(' / ')})` : '';
    if (toolUses[0].name === 'AskUserQuestion' && !failed) {
      const content = results[0]?.content;
      const text = typeof content === 'string' ? content : JSON.stringify(content ?? '');
      return { text: `Answer received: ${text.slice(0, 200)}${noted}` };
    }
    return { text: (failed ? `The ${toolUses[0].name} call failed.` : `Done: the ${toolUses[0].name} step finished.`) + noted };
  }
  if (/\bslowly\b/i.test(prompt)) {
    const words = 'Once upon a time a small robot lived in a lighthouse by the sea and every night it counted the ships that passed and wrote their names in a book that nobody ever read until one stormy night a';
    const count = Number(/(\d+)\s+words/i.exec(prompt)?.[1] ?? 40);
    const list = words.split(' ');
    const text = Array.from({ length: count }, (_, i) => list[i % list.length]).join(' ');
    return { text, pace: Number(/slowly\s+(\d+)\s*ms/i.exec(prompt)?.[1] ?? 150) };
  }
  return { thinking, text: `You said: ${prompt.slice(0, 200)}` };
}

function usage(body) {
  return { input_tokens: 10 + (body.messages?.length ?? 0), output_tokens: 0, cache_creation_input_tokens: 2, cache_read_input_tokens: 3 };
}

async function sse(res, body, reply) {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'request-id': id('req') });
  let closed = false;
  res.on('close', () => (closed = true));
  const send = (type, data) => !closed && res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
  send('message_start', {
    message: { id: id('msg'), type: 'message', role: 'assistant', model: body.model ?? MODEL_FALLBACK, content: [], stop_reason: null, stop_sequence: null, usage: usage(body) },
  });
  let index = 0;
  if (reply.thinking) {
    send('content_block_start', { index, content_block: { type: 'thinking', thinking: '', signature: '' } });
    send('content_block_delta', { index, delta: { type: 'thinking_delta', thinking: reply.thinking } });
    send('content_block_delta', { index, delta: { type: 'signature_delta', signature: 'fake-signature' } });
    send('content_block_stop', { index });
    index++;
  }
  if (reply.text) {
    send('content_block_start', { index, content_block: { type: 'text', text: '' } });
    for (const piece of reply.text.match(/\S+\s*/g) ?? [reply.text]) {
      if (closed) return;
      send('content_block_delta', { index, delta: { type: 'text_delta', text: piece } });
      if (reply.pace) await new Promise((r) => setTimeout(r, reply.pace));
    }
    send('content_block_stop', { index });
    index++;
  }
  if (reply.tool) {
    send('content_block_start', { index, content_block: { type: 'tool_use', id: id('toolu'), name: reply.tool.name, input: {} } });
    const json = JSON.stringify(reply.tool.input);
    const cut = Math.floor(json.length / 2);
    send('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: json.slice(0, cut) } });
    send('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: json.slice(cut) } });
    send('content_block_stop', { index });
  }
  send('message_delta', { delta: { stop_reason: reply.tool ? 'tool_use' : 'end_turn', stop_sequence: null }, usage: { output_tokens: 20 } });
  send('message_stop', {});
  res.end();
}

function json(res, body, reply) {
  const content = [];
  if (reply.text) content.push({ type: 'text', text: reply.text });
  if (reply.tool) content.push({ type: 'tool_use', id: id('toolu'), name: reply.tool.name, input: reply.tool.input });
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ id: id('msg'), type: 'message', role: 'assistant', model: body.model ?? MODEL_FALLBACK, content, stop_reason: reply.tool ? 'tool_use' : 'end_turn', stop_sequence: null, usage: { ...usage(body), output_tokens: 20 } }));
}

/** Start on 127.0.0.1 (port 0 = any). Resolves to { url, requests, close() }. */
export function startFakeAnthropic({ port = 0, log = () => {} } = {}) {
  const requests = [];
  const watchers = [];
  /** Resolves with the first request (seen or future) that `match` accepts; rejects after `ms`. */
  const waitForRequest = (match = () => true, ms = 60_000) =>
    new Promise((resolve, reject) => {
      const seen = requests.find(match);
      if (seen) return resolve(seen);
      const w = { match, resolve };
      watchers.push(w);
      setTimeout(() => {
        const i = watchers.indexOf(w);
        if (i >= 0) {
          watchers.splice(i, 1);
          reject(new Error('timed out waiting for a model request'));
        }
      }, ms).unref();
    });
  const server = http.createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      let body = {};
      try {
        body = raw ? JSON.parse(raw) : {};
      } catch {}
      const entry = { method: req.method, path, headers: req.headers, body };
      requests.push(entry);
      for (const w of watchers.filter((w) => w.match(entry))) {
        watchers.splice(watchers.indexOf(w), 1);
        w.resolve(entry);
      }
      log(`${req.method} ${path}`);
      if (req.method === 'HEAD') return res.writeHead(200).end();
      if (path === '/v1/messages' && req.method === 'POST') {
        const reply = script(body, req.headers);
        const turn = lastTurn(body.messages ?? []);
        if (/fail with 500/i.test(turn.prompt)) {
          res.writeHead(500, { 'content-type': 'application/json' });
          return res.end(JSON.stringify({ type: 'error', error: { type: 'api_error', message: 'scripted failure' } }));
        }
        // What this answer reports as usage, for tests that count it.
        entry.reported = { ...usage(body), output_tokens: 20 };
        const wait = /wait (\d+)\s*ms/i.exec(turn.prompt);
        const delay = wait && turn.toolUses.length === 0 && !req.headers['x-claude-code-agent-id'] ? Number(wait[1]) : 0;
        const answer = () => (body.stream ? sse(res, body, reply) : json(res, body, reply));
        return delay ? setTimeout(answer, delay) : answer();
      }
      if (path === '/v1/messages/count_tokens') return res.writeHead(200, { 'content-type': 'application/json' }).end('{"input_tokens":10}');
      if (path === '/v1/models') return res.writeHead(200, { 'content-type': 'application/json' }).end('{"data":[],"has_more":false}');
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ type: 'error', error: { type: 'not_found_error', message: path } }));
    });
  });
  return new Promise((resolve) => {
    server.listen(port, '127.0.0.1', () => {
      const url = `http://127.0.0.1:${server.address().port}`;
      resolve({ url, requests, waitForRequest, close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) });
    });
  });
}
