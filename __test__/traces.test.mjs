// OpenTelemetry traces: with OTEL_EXPORTER_OTLP_ENDPOINT set, a turn is exported over OTLP/HTTP
// as a span tree. The receiver is this test; the runtime runs in a child process, since the
// exporter is chosen once per process from its environment.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

const CHILD = `
  import { agentRuntime } from ${JSON.stringify(path.join(here, 'helpers', 'agent.mjs'))};
  import { client, API_KEY } from ${JSON.stringify(path.join(here, 'helpers', 'http.mjs'))};
  const h = await agentRuntime();
  const rest = client(h.rt.createRestServer({ apiKey: API_KEY }).fetch);
  const id = (await rest('POST', '/api/sessions', { agentProfileRef: 'default', architecture: 'claude-agent-sdk' })).body.sessionId;
  await rest('POST', '/api/sessions/' + id + '/messages', { content: 'write haiku.txt' });
  await h.turnEnd(id);
  await h.close(); // shutdown flushes what the batch still holds
  process.exit(0);
`;

/** OTLP/JSON attributes as a plain object. */
function attrs(span) {
  const out = {};
  for (const { key, value } of span.attributes ?? []) out[key] = value.stringValue ?? (value.intValue !== undefined ? Number(value.intValue) : value.boolValue ?? value.doubleValue);
  return out;
}

test('OTLP traces: a turn is a span tree (sandbox start, model calls) with REST and adapter spans beside it', { timeout: 120_000 }, async () => {
  const spans = [];
  const receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      if (req.url === '/v1/traces') {
        for (const rs of JSON.parse(body).resourceSpans ?? []) {
          const service = rs.resource?.attributes?.find((a) => a.key === 'service.name')?.value?.stringValue;
          for (const ss of rs.scopeSpans ?? []) for (const s of ss.spans ?? []) spans.push({ ...s, service });
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
  try {
    const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD], {
      env: { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiver.address().port}`, OTEL_BSP_SCHEDULE_DELAY: '100' },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    const code = await new Promise((r) => child.on('exit', r));
    assert.equal(code, 0, 'the child ran its turn');

    const named = (re) => spans.filter((s) => re.test(s.name));
    const [turn, ...more] = named(/^invoke_agent claude-agent-sdk$/);
    assert.ok(turn, `a turn span among: ${[...new Set(spans.map((s) => s.name))].join(', ')}`);
    assert.equal(more.length, 0, 'one turn');
    assert.equal(turn.service, 'agent-runtime');
    assert.equal(attrs(turn)['gen_ai.operation.name'], 'invoke_agent');
    const children = spans.filter((s) => s.parentSpanId === turn.spanId);
    const sandbox = children.find((s) => s.name === 'create_sandbox');
    assert.ok(sandbox, 'the sandbox start is part of the turn');
    assert.equal(attrs(sandbox)['sandbox.provider'], 'local');
    const chats = children.filter((s) => s.name.startsWith('chat '));
    assert.ok(chats.length >= 2, 'the tool call and the answer after it: two model calls in the turn');
    for (const c of chats) {
      const a = attrs(c);
      assert.equal(a['gen_ai.operation.name'], 'chat');
      assert.equal(a['gen_ai.provider.name'], 'anthropic');
      assert.ok(typeof a['gen_ai.usage.output_tokens'] === 'number' && a['gen_ai.usage.output_tokens'] > 0, JSON.stringify(a));
      assert.equal(typeof a['gen_ai.usage.input_tokens'], 'number');
      assert.equal(c.kind, 3, 'client span');
      assert.equal(c.traceId, turn.traceId);
    }
    const post = named(/^POST \/api\/sessions$/)[0];
    assert.ok(post, 'REST requests are spans');
    assert.equal(attrs(post)['http.response.status_code'], 201);
    assert.ok(named(/^createSessionRecord$/).length === 1, 'adapter calls are spans');
    assert.ok(named(/^saveTranscript$/).length >= 1);
  } finally {
    receiver.close();
  }
});
