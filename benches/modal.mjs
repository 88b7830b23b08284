// Modal client speed and memory against the fake control plane (crate fake-modal), the Rust
// client (`modal-scenario bench`) next to the official modal@0.5.4 SDK doing the same in the same
// run: create a sandbox (image + secret + sandbox + task), N exec round trips (`echo ping`, output
// read to the end, exit code), N 1 MB file write+read pairs. Each client runs in its own process,
// alternating, ROUNDS times; medians. Ratio = official / Rust (> 1: Rust is faster or smaller).
// Usage: node benches/modal.mjs [N=20] [ROUNDS=3]
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFakeModal, fakeModalBin } from '../__test__/helpers/fake-modal.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const n = Number(process.argv[2] ?? 20);
const rounds = Number(process.argv[3] ?? 3);

function run(file, args, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop())) : reject(new Error(`${file} exited ${code}`))));
  });
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fake = await startFakeModal();
const rust = [];
const official = [];
try {
  const env = { MODAL_SERVER_URL: fake.url };
  for (let r = 0; r < rounds; r++) {
    rust.push(await run(fakeModalBin('modal-scenario'), ['bench', String(n)], env));
    official.push(await run(process.execPath, [path.join(here, 'modal-official.mjs'), String(n)], env));
  }
} finally {
  await fake.stop();
}
const metric = (runs, f) => median(runs.map(f));
const rows = [
  ['create sandbox (ms)', (x) => x.createMs],
  ['exec round trip, median (ms)', (x) => median(x.execMs)],
  ['1 MB write+read, median (ms)', (x) => median(x.fileMs)],
  ['peak RSS (MiB)', (x) => x.peakRssKiB / 1024],
];
console.log(`Modal client vs official modal@0.5.4, fake control plane, N=${n}, ${rounds} rounds (medians)`);
for (const [name, f] of rows) {
  const a = metric(rust, f);
  const b = metric(official, f);
  console.log(`${name.padEnd(32)} rust ${a.toFixed(2).padStart(9)}   official ${b.toFixed(2).padStart(9)}   ratio ${(b / a).toFixed(2)}x`);
}
