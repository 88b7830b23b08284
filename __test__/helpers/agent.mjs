// A runtime that runs the real Claude Agent SDK in local sandboxes against the bundled fake
// Messages API, with a recording adapter and an event log that tests can wait on.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createAgentRuntime } from '../../index.mjs';
import { startFakeAnthropic } from '../../fake-model/fake-anthropic.mjs';
import { recordingAdapter } from './adapter.mjs';

export const EVENTS = [
  'session:status', 'session:block:start', 'session:block:delta', 'session:block:update', 'session:block:complete',
  'session:metadata:update', 'session:file:created', 'session:file:modified', 'session:file:deleted',
  'session:subagent:discovered', 'session:subagent:completed', 'session:error', 'session:transcript:changed',
];

export const AGENT_PROFILE = {
  id: 'default',
  name: 'Default Agent',
  tools: ['Read', 'Write', 'Edit', 'Bash', 'Agent'],
  subagents: [{ name: 'helper', description: 'Checks things for the main agent', prompt: 'You help.' }],
};

export async function agentRuntime(options = {}) {
  const fake = await startFakeAnthropic();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'arn-sandboxes-'));
  const rec = recordingAdapter({ profiles: [AGENT_PROFILE] });
  const rt = await createAgentRuntime({
    persistence: rec.adapter,
    logLevel: 'warn',
    ...options,
    sandbox: {
      provider: 'local',
      root,
      env: { ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: 'fake-key', CLAUDE_CODE_MAX_RETRIES: '0', API_TIMEOUT_MS: '30000' },
    },
  });
  const log = [];
  const waiters = [];
  for (const name of EVENTS) {
    rt.eventBus.on(name, (payload) => {
      log.push([name, payload]);
      for (const w of [...waiters]) {
        if (w.match(name, payload)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve([name, payload]);
        }
      }
    });
  }
  /** Resolves with the first event (already seen or future) matching; rejects after `ms`. */
  const waitFor = (match, ms = 60_000, what = 'event') => {
    const seen = log.find(([n, p]) => match(n, p));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const w = { match, resolve };
      waiters.push(w);
      setTimeout(() => {
        const i = waiters.indexOf(w);
        if (i >= 0) {
          waiters.splice(i, 1);
          reject(new Error(`timed out waiting for ${what}`));
        }
      }, ms).unref();
    });
  };
  const of = (sessionId, name) => log.filter(([n, p]) => n === name && p.sessionId === sessionId).map(([, p]) => p);
  const turnEnd = (sessionId, count = 1) =>
    waitFor((n, p) => n === 'session:transcript:changed' && p.sessionId === sessionId && --count <= 0, 60_000, 'end of turn');
  const close = async () => {
    await rt.shutdown();
    await fake.close();
    fs.rmSync(root, { recursive: true, force: true });
  };
  return { rt, rec, fake, root, log, waitFor, of, turnEnd, close };
}

/** Resolves once `check()` is true (re-checked every 20 ms), for effects that carry no event
 *  (an adapter call made after an event); rejects after `ms`. */
export async function eventually(check, ms = 15_000, what = 'condition') {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Pids of processes whose command line mentions `needle`. */
export function pidsMentioning(needle) {
  const out = [];
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(needle)) out.push(Number(pid));
    } catch {}
  }
  return out;
}
