// A runtime on local sandboxes whose agents talk to a fake Messages API, started the way every
// benchmark here starts one.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { memoryAdapter } from './adapter.mjs';

/** The package in `dir` (a checkout with its addon built), sandboxes under a fresh temporary
 *  `arn-<prefix>-` directory, `config` over the defaults; started. `removeRoot()` deletes the
 *  sandbox directory, `clear()` forgets every stored session. */
export async function localRuntime({ dir, prefix, modelUrl, tools, config = {} }) {
  const { createAgentRuntime } = await import(pathToFileURL(path.join(dir, 'index.mjs')).href);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `arn-${prefix}-`));
  const { persistence, clear } = memoryAdapter(tools);
  const rt = await createAgentRuntime({
    persistence,
    logLevel: process.env.LOG_LEVEL ?? 'warn',
    ...config,
    sandbox: {
      provider: 'local',
      root,
      env: { ANTHROPIC_BASE_URL: modelUrl, ANTHROPIC_API_KEY: 'fake-key', CLAUDE_CODE_MAX_RETRIES: '0' },
    },
  });
  await rt.start();
  return { rt, root, clear, removeRoot: () => fs.rmSync(root, { recursive: true, force: true }) };
}
