// The fake Modal control plane (crate fake-modal) as a child process: built with cargo on first
// use, started on a free port, driven through its stdin commands.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { REPO } from '../../examples/seed-app.mjs';

let built;
/** Path of a binary of the fake-modal crate: `fake-modal` (the fake) or `modal-scenario` (our client). */
export function fakeModalBin(name = 'fake-modal') {
  if (!built) {
    // The same command `npm test` runs first, so this is normally a no-op.
    execFileSync('cargo', ['build', '--release', '--quiet', '--workspace', '--bins'], { cwd: REPO, stdio: 'inherit' });
    built = process.env.CARGO_TARGET_DIR ? path.resolve(REPO, process.env.CARGO_TARGET_DIR) : path.join(REPO, 'target');
  }
  return path.join(built, 'release', name);
}

/** Start a fake; `faults` as in fake-modal's `Faults`. Sandboxes see this package's node_modules in /app. */
export async function startFakeModal({ faults = {}, record } = {}) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'arn-fake-modal-'));
  const args = ['--root', root, '--node-modules', path.join(REPO, 'node_modules'), '--faults', JSON.stringify(faults)];
  if (record) args.push('--record', record);
  const child = spawn(fakeModalBin(), args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout });
  const pending = [];
  let ready;
  const first = new Promise((resolve, reject) => {
    ready = resolve;
    child.once('exit', (code) => reject(new Error(`fake-modal exited early (${code})`)));
  });
  lines.on('line', (line) => {
    const msg = JSON.parse(line);
    if (ready) {
      const r = ready;
      ready = null;
      r(msg);
    } else pending.shift()?.(msg);
  });
  const { url } = await first;
  const command = (cmd) => new Promise((resolve) => (pending.push(resolve), child.stdin.write(cmd + '\n')));
  return {
    url,
    root,
    terminate: (id) => command(`terminate ${id}`),
    terminateAll: () => command('terminate-all'),
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.stdin.end();
        await exited;
      }
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}
