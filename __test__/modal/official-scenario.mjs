// The reference runtime's sequence of Modal calls, made with the official SDK (modal@0.5.4, the
// reference's pin) against whatever MODAL_SERVER_URL points at. Prints one JSON line with the
// outcomes. Used to check the fake control plane against the real client, and as the baseline
// of the Modal benchmark.
import { ModalClient } from 'modal';
import { imageCommands } from './recipe.mjs';

const client = new ModalClient({ tokenId: 'ak-test', tokenSecret: 'as-test' });
const app = await client.apps.fromName(process.env.MODAL_APP ?? 'agent-runtime', { createIfMissing: true });
const image = client.images.fromRegistry('node:22-slim').dockerfileCommands(imageCommands());
const sb = await client.sandboxes.create(app, image, {
  workdir: '/workspace',
  timeoutMs: 86_400_000,
  idleTimeoutMs: 900_000,
  env: { HOME: '/root', IS_SANDBOX: '1', LANG: 'C.UTF-8' },
});
const out = { sandboxId: sb.sandboxId };

// Write a file the way the reference does: mkdir -p, then the file API.
const mk = await sb.exec(['mkdir', '-p', '/workspace/dir']);
out.mkdir = await mk.wait();
let f = await sb.open('/workspace/dir/a.txt', 'w');
await f.write(new TextEncoder().encode('hello ✓'));
await f.close();
f = await sb.open('/workspace/dir/a.txt', 'r');
out.read = new TextDecoder().decode(await f.read());
await f.close();
try {
  await sb.open('/workspace/missing.txt', 'r');
  out.missing = 'opened';
} catch (e) {
  out.missing = e.constructor.name;
}

// A command with stdin, both outputs and an exit code.
const p = await sb.exec(['sh', '-c', 'cat; echo err 1>&2; exit 3']);
await p.stdin.writeText('in');
await p.stdin.close();
out.stdout = await p.stdout.readText();
out.stderr = await p.stderr.readText();
out.code = await p.wait();

const ls = await sb.exec(['ls', '-1'], { workdir: '/workspace/dir' });
out.ls = (await ls.stdout.readText()).trim();
await ls.wait();

out.pollBefore = await sb.poll();
await sb.terminate();
out.pollAfter = await sb.poll();
process.stdout.write(JSON.stringify(out) + '\n');
process.exit(0);
