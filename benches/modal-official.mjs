// Baseline side of benches/modal.mjs: the official modal@0.5.4 SDK doing what
// `modal-scenario bench N` does with the Rust client. Prints one JSON line.
import { ModalClient } from 'modal';
import { imageCommands } from '../__test__/modal/recipe.mjs';

const n = Number(process.argv[2] ?? 10);
const now = () => Number(process.hrtime.bigint()) / 1e6;
const client = new ModalClient({ tokenId: 'ak-test', tokenSecret: 'as-test' });
// "create" = everything up to a sandbox that has run its first command: auth, app, image,
// secret, sandbox, task id, one exec (the Rust side measures the same span).
let t = now();
const app = await client.apps.fromName('agent-runtime', { createIfMissing: true });
const image = client.images.fromRegistry('node:22-slim').dockerfileCommands(imageCommands());
const sb = await client.sandboxes.create(app, image, {
  workdir: '/workspace',
  timeoutMs: 86_400_000,
  idleTimeoutMs: 900_000,
  env: { HOME: '/root', IS_SANDBOX: '1', LANG: 'C.UTF-8' },
});
await sb.exec(['true']).then((p) => p.wait());
const createMs = now() - t;
const execMs = [];
for (let i = 0; i < n; i++) {
  t = now();
  const p = await sb.exec(['echo', 'ping']);
  const out = await p.stdout.readText();
  const code = await p.wait();
  if (out !== 'ping\n' || code !== 0) throw new Error(`unexpected exec result ${code} ${out}`);
  execMs.push(now() - t);
}
const mb = new Uint8Array(1 << 20).map((_, i) => i % 251);
const fileMs = [];
for (let i = 0; i < n; i++) {
  const path = `/workspace/bench-${i}.bin`;
  t = now();
  // What the reference's writeFile does: mkdir -p, then the file API.
  await (await sb.exec(['mkdir', '-p', '/workspace'])).wait();
  let f = await sb.open(path, 'w');
  await f.write(mb);
  await f.close();
  f = await sb.open(path, 'r');
  const back = await f.read();
  await f.close();
  if (back.length !== mb.length) throw new Error('short read');
  fileMs.push(now() - t);
}
await sb.terminate();
process.stdout.write(JSON.stringify({ createMs, execMs, fileMs, peakRssKiB: process.resourceUsage().maxRSS }) + '\n');
process.exit(0);
