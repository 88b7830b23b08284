import { agentRuntime } from './helpers/agent.mjs';
import { serve } from './helpers/server.mjs';
const h = await agentRuntime({ interruptGraceMs: 1500 });
const srv = await serve(h.rt);
const t0 = Date.now();
for (const n of ['session:block:complete', 'session:error', 'session:question:requested', 'session:question:resolved']) h.rt.eventBus.on(n, async (p) => {
  console.log(Date.now() - t0, n, JSON.stringify(p).slice(0, 400));
  if (n === 'session:question:requested') console.log(JSON.stringify((await srv.rest('POST', `/api/sessions/${p.sessionId}/questions/${p.requestId}`, { answers: { 'Which color?': 'blue' } })).body));
});
const id = (await srv.rest('POST', '/api/sessions', { agentProfileRef: 'default', architecture: 'claude-agent-sdk' })).body.sessionId;
await srv.rest('POST', `/api/sessions/${id}/messages`, { content: 'ask: Which color? [red|blue]' });
await new Promise((r) => setTimeout(r, 5000));
console.log('TOOLS', JSON.stringify(h.fake.requests.filter((r) => r.path === '/v1/messages').at(-1).body.tools.map(t=>t.name)));
await srv.close(); await h.close();
