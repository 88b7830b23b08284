// Prometheus metrics: what an operator scraping GET /metrics sees after real work.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { agentRuntime } from './helpers/agent.mjs';
import { serve, connect } from './helpers/server.mjs';
import { API_KEY, client } from './helpers/http.mjs';
import { recordingAdapter } from './helpers/adapter.mjs';
import { createAgentRuntime } from '../index.mjs';

const CLAUDE = { agentProfileRef: 'default', architecture: 'claude-agent-sdk' };

/** The value of one sample line (`name{labels} value`), or undefined. */
function sample(text, series) {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('GET /metrics: sessions, turns, time to first token, sandboxes, adapter calls, clients, model tokens', { timeout: 240_000 }, async () => {
  const h = await agentRuntime({ metrics: true });
  const srv = await serve(h.rt);
  try {
    const unauthorized = await fetch(`${srv.url}/metrics`);
    assert.equal(unauthorized.status, 401, 'behind the API key by default');
    const s = await h.rt.sessionManager.createSession(CLAUDE);
    await s.sendMessage('write haiku.txt');
    await h.turnEnd(s.sessionId);
    const c = await connect(srv.url, { transports: ['websocket'] });
    try {
      const res = await fetch(`${srv.url}/metrics`, { headers: { Authorization: `Bearer ${API_KEY}` } });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type'), /^application\/openmetrics-text/);
      const text = await res.text();
      assert.equal(sample(text, 'agent_runtime_sessions_loaded'), 1);
      assert.equal(sample(text, 'agent_runtime_sessions_active'), 1);
      assert.equal(sample(text, 'agent_runtime_socketio_clients'), 1);
      assert.equal(sample(text, 'agent_runtime_turns_total{outcome="started"}'), 1);
      assert.equal(sample(text, 'agent_runtime_turns_total{outcome="completed"}'), 1);
      assert.equal(sample(text, 'agent_runtime_turn_duration_seconds_count'), 1);
      assert.equal(sample(text, 'agent_runtime_time_to_first_token_seconds_count'), 1);
      assert.equal(sample(text, 'agent_runtime_sandbox_starts_total{provider="local"}'), 1);
      assert.ok(sample(text, 'agent_runtime_adapter_call_duration_seconds_count{method="createSessionRecord"}') >= 1);
      assert.ok(sample(text, 'agent_runtime_adapter_call_duration_seconds_count{method="saveTranscript"}') >= 1);
      assert.ok(sample(text, 'agent_runtime_event_log_events') > 0);
      const output = text.split('\n').filter((l) => l.startsWith('agent_runtime_model_tokens_total{') && l.includes('kind="output"'));
      assert.ok(output.length >= 1 && output.every((l) => Number(l.split(' ').at(-1)) > 0), `model tokens counted:\n${output.join('\n')}`);
      assert.ok(text.trimEnd().endsWith('# EOF'));
      // runtime.metrics() gives the same exposition to servers that route it themselves.
      assert.match(h.rt.metrics(), /agent_runtime_turns_total\{outcome="completed"\} 1/);
    } finally {
      c.close();
    }
    // A failing adapter call is counted by method.
    h.rec.faults.listAllSessions = 'throw';
    const failed = await srv.rest('GET', '/api/sessions');
    assert.equal(failed.status, 500);
    delete h.rec.faults.listAllSessions;
    assert.equal(sample(h.rt.metrics(), 'agent_runtime_adapter_call_failures_total{method="listAllSessions"}'), 1);
  } finally {
    await srv.close();
    await h.close();
  }
});

test('metrics are off by default (404) and can be public', { timeout: 60_000 }, async () => {
  for (const [metrics, key, status] of [[undefined, true, 404], [{ public: true }, false, 200], [true, false, 401]]) {
    const h = await agentRuntime({ metrics });
    try {
      const http = client(h.rt.createRestServer({ apiKey: API_KEY }).fetch);
      const res = await http('GET', '/metrics', undefined, key ? undefined : {});
      assert.equal(res.status, status, JSON.stringify(metrics));
    } finally {
      await h.close();
    }
  }
  const adapter = recordingAdapter().adapter;
  await assert.rejects(createAgentRuntime({ persistence: adapter, metrics: { public: 'yes' } }), /metrics\.public must be a boolean/);
  await assert.rejects(createAgentRuntime({ persistence: adapter, metrics: { path: '/m' } }), /metrics\.path is not an option/);
});
