// The README's main command, as a newcomer runs it: no key, so the bundled fake model answers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { REPO } from '../examples/seed-app.mjs';

test('npm run demo: sandbox progress, streamed text, a tool call, a file, then a clean stop', { timeout: 240_000 }, async () => {
  const env = { ...process.env, DEMO_ONCE: '1', PORT: '0', NO_COLOR: '1' };
  delete env.ANTHROPIC_API_KEY;
  delete env.ANTHROPIC_BASE_URL;
  const child = spawn(process.execPath, ['examples/demo.mjs'], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const code = await new Promise((r) => child.on('exit', r));
  assert.equal(code, 0, out);
  for (const expected of [
    'the bundled fake Messages API answers',
    'server on http://127.0.0.1:', // loopback by default: the demo key is well known
    'sandbox: starting — Creating sandbox container...',
    'sandbox: ready — Ready',
    "agent: I'll write haiku.txt.",
    'tool call: Write',
    'file created: haiku.txt',
    'Session completed successfully',
    'files: haiku.txt',
  ]) {
    assert.ok(out.includes(expected), `demo output has "${expected}":\n${out}`);
  }
});
