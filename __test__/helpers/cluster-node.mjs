// One node of a test cluster, run as its own process (started by startNode in cluster.mjs): a
// runtime in cluster mode over the shared directory store, local sandboxes whose agents talk to
// the bundled fake model, REST and Socket.IO on one Node http.Server, as an app would serve them.
// Prints `READY <port>` on stdout once it serves; SIGTERM (or SIGINT) shuts the runtime down (its
// sessions stored and released) and exits 0. If its parent goes away (stdin closes) it exits at
// once, so a crashed test leaves no node behind.
//
// Env:
//   REDIS_URL      required; given as cluster.redisUrl, or with REDIS_VIA_ENV=1 as
//                  AGENT_RUNTIME_REDIS_URL (cluster then carries only nodeId/leaseTtlMs)
//   NODE_ID        cluster.nodeId (also the `node` of this process's lines in writes.log)
//   LEASE_TTL_MS   cluster.leaseTtlMs (unset: the runtime's default)
//   STORE_DIR      the shared store's directory (helpers/shared-store.mjs)
//   PORT           default 0 (any free port)
//   MODEL_URL      a fake Messages API to use; unset: this process starts the bundled one
//   SANDBOX_ROOT   where this node's sandboxes live (unset: a new temp dir)
//   NODE_CONFIG    JSON merged into the runtime config (e.g. {"idleTimeoutMs": 5000})
//   LOG_LEVEL      default warn
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { createAgentRuntime } from '../../index.mjs';
import { startFakeAnthropic } from '../../fake-model/fake-anthropic.mjs';
import { AGENT_PROFILE } from './agent.mjs';
import { API_KEY } from './http.mjs';
import { answer } from './server.mjs';
import { sharedStore } from './shared-store.mjs';

const env = process.env;
const fail = (msg) => {
  console.error(`cluster-node: ${msg}`);
  process.exit(2);
};
if (!env.REDIS_URL) fail('REDIS_URL is required');
if (!env.NODE_ID) fail('NODE_ID is required');
if (!env.STORE_DIR) fail('STORE_DIR is required');

const nodeId = env.NODE_ID;
const fake = env.MODEL_URL ? null : await startFakeAnthropic();
const modelUrl = env.MODEL_URL || fake.url;
const sandboxRoot = env.SANDBOX_ROOT || fs.mkdtempSync(path.join(os.tmpdir(), `arn-node-${nodeId}-`));

const cluster = { nodeId };
if (env.LEASE_TTL_MS) cluster.leaseTtlMs = Number(env.LEASE_TTL_MS);
if (env.REDIS_VIA_ENV === '1') process.env.AGENT_RUNTIME_REDIS_URL = env.REDIS_URL;
else cluster.redisUrl = env.REDIS_URL;

const runtime = await createAgentRuntime({
  persistence: sharedStore({ dir: env.STORE_DIR, node: nodeId, profiles: [AGENT_PROFILE] }),
  logLevel: env.LOG_LEVEL || 'warn',
  ...(env.NODE_CONFIG ? JSON.parse(env.NODE_CONFIG) : {}),
  cluster,
  sandbox: {
    provider: 'local',
    root: sandboxRoot,
    env: { ANTHROPIC_BASE_URL: modelUrl, ANTHROPIC_API_KEY: 'fake-key', CLAUDE_CODE_MAX_RETRIES: '0', API_TIMEOUT_MS: '30000' },
  },
});
await runtime.start();

// The app's own server: REST through the runtime's fetch handler, Socket.IO attached beside it.
const app = runtime.createRestServer({ apiKey: API_KEY });
const server = http.createServer(async (req, res) => {
  try {
    await answer(app.fetch, req, res);
  } catch (err) {
    console.error(`cluster-node ${nodeId}: ${req.method} ${req.url}: ${err?.stack ?? err}`);
    if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: String(err?.message ?? err), code: 'TEST_SERVER_ERROR' }));
  }
});
const ws = runtime.createWebSocketServer(server);
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(env.PORT || 0), '127.0.0.1', resolve);
});

let stopping = false;
async function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  try {
    await runtime.shutdown(); // stores and releases this node's sessions
  } catch (err) {
    console.error(`cluster-node ${nodeId}: shutdown on ${signal} failed: ${err?.stack ?? err}`);
    process.exitCode = 1;
  }
  ws.close();
  server.closeAllConnections();
  server.close();
  await fake?.close();
  if (!env.SANDBOX_ROOT) fs.rmSync(sandboxRoot, { recursive: true, force: true });
  process.exit(process.exitCode ?? 0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
// The parent holds our stdin: when it is gone, so are we (sandboxes die with this process).
process.stdin.on('end', () => !stopping && process.exit(1));
process.stdin.on('error', () => {});
process.stdin.resume();

console.log(`READY ${server.address().port}`);
