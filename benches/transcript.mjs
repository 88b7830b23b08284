// Session-load speed on big Claude transcripts: loadSession + getState through the public API,
// against a baseline measured in the same run: Node parsing the same blob (JSON.parse of the
// combined JSON and of every JSONL line) — the floor of any JS implementation, which the
// reference exceeds (it also converts to blocks). Prints one JSON line per size.
// Usage: node benches/transcript.mjs [MB,...]   (default 1,10,50)
import { createAgentRuntime } from '../index.mjs';

const sizes = (process.argv[2] ?? '1,10,50').split(',').map(Number);
const now = () => Number(process.hrtime.bigint()) / 1e6;

function makeTranscript(targetBytes) {
  const lines = [];
  let bytes = 0;
  let i = 0;
  const text = 'lorem ipsum dolor sit amet '.repeat(20);
  while (bytes < targetBytes) {
    const ts = new Date(1.7e12 + i * 1000).toISOString();
    const base = { sessionId: 's', cwd: '/workspace', version: '2.0.50', isSidechain: false, timestamp: ts };
    const kind = i % 4;
    let row;
    if (kind === 0) row = { ...base, type: 'user', uuid: `u${i}`, message: { role: 'user', content: `question ${i}: ${text}` } };
    else if (kind === 1) row = { ...base, type: 'assistant', uuid: `a${i}`, message: { model: 'claude-sonnet-4-5', role: 'assistant', content: [{ type: 'thinking', thinking: text }, { type: 'text', text }] } };
    else if (kind === 2) row = { ...base, type: 'assistant', uuid: `t${i}`, message: { model: 'claude-sonnet-4-5', role: 'assistant', content: [{ type: 'tool_use', id: `toolu_${i}`, name: 'Write', input: { file_path: `/workspace/f${i}.txt`, content: text } }] } };
    else row = { ...base, type: 'user', uuid: `r${i}`, message: { role: 'user', content: [{ type: 'tool_result', tool_use_id: `toolu_${i - 1}`, content: text }] }, toolUseResult: { type: 'create', filePath: `/workspace/f${i}.txt`, content: text } };
    const line = JSON.stringify(row);
    lines.push(line);
    bytes += line.length + 1;
    i++;
  }
  return { raw: JSON.stringify({ main: lines.join('\n') + '\n', subagents: [] }), lines: lines.length };
}

function baseline(raw) {
  const t0 = now();
  const c = JSON.parse(raw);
  let n = 0;
  for (const l of c.main.split('\n')) if (l) n += JSON.parse(l) ? 1 : 0;
  return now() - t0;
}

for (const mb of sizes) {
  const { raw, lines } = makeTranscript(mb * 1e6);
  const record = { sessionId: 'big', type: 'claude-agent-sdk', agentProfileReference: 'p', createdAt: 1, lastActivity: 1 };
  const persistence = {
    listAllSessions: async () => [record],
    loadSession: async () => ({ ...record, rawTranscript: raw, workspaceFiles: [] }),
    createSessionRecord: async () => {}, updateSessionRecord: async () => {}, saveTranscript: async () => {},
    saveWorkspaceFile: async () => {}, deleteSessionFile: async () => {}, listAgentProfiles: async () => [],
    loadAgentProfile: async (id) => ({ id, name: 'p' }),
  };
  const base = Math.min(baseline(raw), baseline(raw));
  const runs = [];
  for (let r = 0; r < 3; r++) {
    const rt = await createAgentRuntime({ persistence, logLevel: 'error' });
    const t0 = now();
    const s = await rt.sessionManager.loadSession('big');
    const t1 = now();
    const state = s.getState();
    const t2 = now();
    runs.push({ loadMs: t1 - t0, getStateMs: t2 - t1, blocks: state.blocks.length });
    await rt.shutdown();
  }
  const best = runs.reduce((a, b) => (a.loadMs + a.getStateMs <= b.loadMs + b.getStateMs ? a : b));
  const total = best.loadMs + best.getStateMs;
  console.log(JSON.stringify({
    bench: 'transcript', mb, lines, blocks: best.blocks,
    loadMs: +best.loadMs.toFixed(1), getStateMs: +best.getStateMs.toFixed(1),
    baselineNodeParseMs: +base.toFixed(1), ratioVsNodeParse: +(total / base).toFixed(2),
  }));
}
