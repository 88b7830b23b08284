// The OpenCode runner on its own (docs/RUNNER.md), driven through stdin against the fake
// Messages API: turns in one process, interrupt, steer, permissions, kill, end of input.
// Needs only Node, opencode-ai in node_modules and ripgrep (no native addon).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { startFakeAnthropic } from '../fake-model/fake-anthropic.mjs';
import { eventually, pidsWorkingIn } from './helpers/agent.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const RUNNER = join(root, 'sandbox', 'opencode-runner.mjs');
const MODULES = process.env.AGENT_RUNTIME_NODE_MODULES || join(root, 'node_modules');
// A missing OpenCode is a failure that says how to install it, not a silent skip.
if (!existsSync(join(MODULES, '.bin', 'opencode'))) throw new Error(`opencode-ai is not installed in ${MODULES}: npm install (it is a dev dependency)`);

/** A runner against its own fake model, HOME and workspace; lines are collected as they come. */
async function runner(t, { ask = false } = {}) {
  const fake = await startFakeAnthropic();
  const dir = mkdtempSync(join(tmpdir(), 'oc-runner-test-'));
  const home = join(dir, 'home');
  const ws = join(dir, 'ws');
  execFileSync('mkdir', ['-p', home, ws]);
  const proc = spawn(process.execPath, [RUNNER], {
    cwd: ws,
    env: { ...process.env, ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: 'x', AGENT_RUNTIME_NODE_MODULES: MODULES, HOME: home, TMPDIR: dir },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  const lines = [];
  const waiters = new Set();
  createInterface({ input: proc.stdout }).on('line', (l) => {
    const v = JSON.parse(l);
    lines.push(v);
    for (const w of waiters) if (lines.length - 1 >= w.from && w.match(v)) (waiters.delete(w), w.resolve(v));
  });
  let done = false;
  const exited = new Promise((r) => proc.on('exit', (code) => ((done = true), r(code))));
  t.after(async () => {
    // The runner's own kill takes OpenCode with it (a SIGKILL of the runner would not).
    if (!done && proc.stdin.writable) proc.stdin.write('{"type":"kill"}\n');
    const late = setTimeout(() => proc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(late);
    await fake.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const r = {
    fake,
    ws,
    lines,
    exited,
    send: (o) => proc.stdin.write(JSON.stringify(o) + '\n'),
    end: () => proc.stdin.end(),
    /** The first line from index `from` on that `match` accepts. */
    waitFor: (match, from = 0, ms = 30_000) =>
      new Promise((resolve, reject) => {
        const seen = lines.slice(from).find(match);
        if (seen) return resolve(seen);
        const w = { match, from, resolve };
        waiters.add(w);
        setTimeout(() => waiters.delete(w) && reject(new Error(`timed out after ${lines.filter((l) => l.type === "runner").map((l) => l.event + ":" + (l.turnId ?? l.messageId ?? "")).join(" ")}; stderr: ${stderr.slice(-1000)}`)), ms).unref();
      }),
    control: (event, turnId) => r.waitFor((v) => v.type === 'runner' && v.event === event && (turnId === undefined || v.turnId === turnId || v.messageId === turnId)),
    /** The messages of the newest main-agent model request. */
    lastRequest: () => fake.requests.filter((q) => q.path === '/v1/messages' && q.body.tools?.length).at(-1).body.messages,
  };
  r.send({ type: 'start', sessionId: `ses_${Date.now().toString(16)}_runnertest`, model: 'anthropic/claude-sonnet-4-5', maxRetries: 0, ask });
  const ready = await r.control('ready');
  assert.equal(ready.pid, proc.pid);
  return r;
}

const toolRunning = (v) => v.type === 'message.part.updated' && v.properties?.part?.type === 'tool' && v.properties.part.state?.status === 'running';

test('turns, interrupt, steer and end of input in one OpenCode runner', { timeout: 120_000 }, async (t) => {
  const r = await runner(t);

  r.send({ type: 'turn', turnId: 't1', prompt: 'hello one' });
  assert.equal((await r.control('turn_end', 't1')).status, 'completed');
  r.send({ type: 'turn', turnId: 't2', prompt: 'hello two' });
  assert.equal((await r.control('turn_end', 't2')).status, 'completed');
  const seen = JSON.stringify(r.lastRequest());
  assert.ok(seen.includes('hello one') && seen.includes('You said: hello one') && seen.includes('hello two'), 'the second turn sees the first');
  assert.ok(r.lines.some((v) => v.type === 'session.idle'), 'OpenCode events are printed as they are');

  // Interrupt while the model is slow: quickly "interrupted", not an error.
  r.send({ type: 'turn', turnId: 't3', prompt: 'wait 5000ms' });
  await r.fake.waitForRequest((q) => JSON.stringify(q.body.messages ?? []).includes('wait 5000ms'));
  const asked = Date.now();
  r.send({ type: 'interrupt' });
  const t3 = await r.control('turn_end', 't3');
  assert.equal(t3.status, 'interrupted');
  assert.ok(Date.now() - asked < 2000);
  r.send({ type: 'interrupt' }); // idle: harmless

  // Interrupt a running command: it is killed, the next turn works.
  let from = r.lines.length;
  r.send({ type: 'turn', turnId: 't4', prompt: 'run: sleep 30' });
  await r.waitFor(toolRunning, from);
  r.send({ type: 'interrupt' });
  assert.equal((await r.control('turn_end', 't4')).status, 'interrupted');
  r.send({ type: 'turn', turnId: 't5', prompt: 'hello five' });
  assert.equal((await r.control('turn_end', 't5')).status, 'completed');

  // Steer into a running turn: the model answers it before the turn ends.
  from = r.lines.length;
  r.send({ type: 'turn', turnId: 't6', prompt: 'run: sleep 1' });
  await r.waitFor(toolRunning, from);
  r.send({ type: 'steer', messageId: 'm1', prompt: 'and then this' });
  assert.equal((await r.control('steered', 'm1')).delivered, true);
  assert.equal((await r.control('turn_end', 't6')).status, 'completed');
  assert.match(JSON.stringify(r.lastRequest().at(-1)), /and then this/);
  r.send({ type: 'steer', messageId: 'm2', prompt: 'too late' });
  assert.equal((await r.control('steered', 'm2')).delivered, false);

  // A failing model API: an error line, turn_end "error", and the runner stays.
  r.send({ type: 'turn', turnId: 't7', prompt: 'fail with 500' });
  const t7 = await r.control('turn_end', 't7');
  assert.equal(t7.status, 'error');
  assert.equal(r.lines[r.lines.indexOf(t7) - 1].type, 'system');

  // End of input during a turn: the turn finishes, then the runner exits.
  r.send({ type: 'turn', turnId: 't8', prompt: 'wait 500ms' });
  r.end();
  assert.equal((await r.control('turn_end', 't8')).status, 'completed');
  assert.equal(await r.exited, 0);
  // Nothing it started outlives it: the OpenCode server is gone too.
  // (SIGKILLed at the runner's exit; gone a moment later. A survivor fails this after 15 s.)
  await eventually(() => pidsWorkingIn(r.ws).length === 0, 15_000, () => `still running in the workspace: ${pidsWorkingIn(r.ws)}`);
});

test('OpenCode runner: permissions go to the host; kill', { timeout: 120_000 }, async (t) => {
  const r = await runner(t, { ask: true });
  const nth = (n) => r.waitFor((v) => v.event === 'permission' && r.lines.filter((x) => x.event === 'permission').indexOf(v) === n);

  r.send({ type: 'turn', turnId: 'a', prompt: 'run: echo hi > allowed.txt' });
  const p = await nth(0);
  assert.equal(p.kind, 'tool');
  assert.equal(p.toolName, 'bash');
  assert.equal(p.input.command, 'echo hi > allowed.txt');
  assert.ok(p.requestId && p.toolUseId);
  r.send({ type: 'permission', requestId: p.requestId, behavior: 'allow' });
  assert.equal((await r.control('turn_end', 'a')).status, 'completed');
  assert.ok(existsSync(join(r.ws, 'allowed.txt')));

  // A deny with a message: the command does not run, the model gets the message.
  r.send({ type: 'turn', turnId: 'b', prompt: 'run: echo hi > denied.txt' });
  const q = await nth(1);
  r.send({ type: 'permission', requestId: q.requestId, behavior: 'deny', message: 'not today' });
  assert.equal((await r.control('turn_end', 'b')).status, 'completed');
  assert.ok(!existsSync(join(r.ws, 'denied.txt')));
  assert.match(JSON.stringify(r.lastRequest().at(-1)), /not today/);

  // Policy off: tools run unasked.
  r.send({ type: 'policy', ask: false });
  r.send({ type: 'turn', turnId: 'c', prompt: 'run: echo hi > free.txt' });
  assert.equal((await r.control('turn_end', 'c')).status, 'completed');
  assert.ok(existsSync(join(r.ws, 'free.txt')));
  assert.equal(r.lines.filter((x) => x.event === 'permission').length, 2);

  // Kill: the running command dies with the runner.
  const from = r.lines.length;
  r.send({ type: 'turn', turnId: 'd', prompt: 'run: sleep 37.5' });
  await r.waitFor(toolRunning, from);
  r.send({ type: 'kill' });
  await r.exited;
  await new Promise((s) => setTimeout(s, 200));
  const left = execFileSync('ps', ['-eo', 'args']).toString().split('\n').filter((l) => l.startsWith('sleep 37.5'));
  assert.deepEqual(left, []);
});
