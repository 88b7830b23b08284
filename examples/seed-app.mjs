// Build a consumer app around the seed's example server (examples/seed-server.ts, verbatim):
// compile it with `tsc --strict` against a package directory (this repo or an installed
// tarball, seen as @hhopkins/agent-runtime) and run it. Used by the demo and the tests.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const SEED = path.join(REPO, 'examples/seed-server.ts');
const TSC = path.join(REPO, 'node_modules/typescript/bin/tsc');

/** A consumer app dir whose node_modules/@hhopkins/agent-runtime is `pkgDir` (or already installed). */
export function makeConsumer(pkgDir) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arn-consumer-'));
  fs.mkdirSync(path.join(dir, 'src'));
  fs.mkdirSync(path.join(dir, 'node_modules/@hhopkins'), { recursive: true });
  if (pkgDir) fs.symlinkSync(pkgDir, path.join(dir, 'node_modules/@hhopkins/agent-runtime'), 'dir');
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  return dir;
}

export function compileSeed(dir) {
  // Type definitions come from the repo's devDependencies (linked after any npm install in `dir`).
  const types = path.join(dir, 'node_modules/@types');
  if (!fs.existsSync(types)) fs.symlinkSync(path.join(REPO, 'node_modules/@types'), types, 'dir');
  fs.copyFileSync(SEED, path.join(dir, 'src/server.ts'));
  fs.writeFileSync(
    path.join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        outDir: 'dist',
        types: ['node'],
        skipLibCheck: false,
      },
      include: ['src'],
    }),
  );
  const r = spawnSync(process.execPath, [TSC, '-p', dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tsc --strict failed:\n${r.stdout}${r.stderr}`);
  return path.join(dir, 'dist/server.js');
}

/** Start the compiled seed; resolves once it prints that it listens. */
export function runSeed(entry, env = {}) {
  const child = spawn(process.execPath, [entry], {
    cwd: path.dirname(entry),
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const ready = new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('Server running on http://localhost:3001')) resolve();
    });
    child.stderr.on('data', (d) => (out += d));
    child.on('exit', (code) => reject(new Error(`seed server exited early (${code}):\n${out}`)));
  });
  return { child, ready, output: () => out };
}

export function stop(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.on('exit', (code) => resolve(code));
    child.kill('SIGTERM');
  });
}

