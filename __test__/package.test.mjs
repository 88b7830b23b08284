// As a new user would: `npm pack`, install the tarball in an app outside the repo under the
// reference's name (@hhopkins/agent-runtime), which builds the addon from source; then require,
// import, the ./types subpath, and the seed example compiled with tsc --strict and served.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { makeConsumer, compileSeed, runSeed, stop, exerciseSeedServer, REPO } from './helpers/seed.mjs';

const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

test('packed package installs under the alias and runs the seed example', { timeout: 900_000 }, async () => {
  const app = makeConsumer(null);
  const packed = execFileSync(npm, ['pack', '--silent', '--pack-destination', app], { cwd: REPO, encoding: 'utf8' })
    .trim()
    .split('\n')
    .pop();
  const tarball = path.join(app, packed);
  const pkg = JSON.parse(fs.readFileSync(path.join(app, 'package.json'), 'utf8'));
  pkg.dependencies = { '@hhopkins/agent-runtime': `file:${tarball}` };
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify(pkg));
  const install = spawnSync(npm, ['install', '--no-audit', '--no-fund', '--prefer-offline', '--foreground-scripts'], {
    cwd: app,
    encoding: 'utf8',
    // Reuse the repo's compiled dependencies; the package's own crates still build from the tarball.
    env: { ...process.env, CARGO_TARGET_DIR: path.join(REPO, 'target') },
  });
  assert.equal(install.status, 0, `npm install failed:\n${install.stdout}\n${install.stderr}`);
  const installed = path.join(app, 'node_modules/@hhopkins/agent-runtime');
  assert.ok(fs.readdirSync(installed).some((f) => f.endsWith('.node')), 'the addon was built on install');
  assert.ok(!fs.existsSync(path.join(installed, 'target')), 'no target dir left inside node_modules');

  const probe = `
    const cjs = require('@hhopkins/agent-runtime');
    const types = require('@hhopkins/agent-runtime/types');
    import('@hhopkins/agent-runtime').then(async (esm) => {
      const typesEsm = await import('@hhopkins/agent-runtime/types');
      console.log(JSON.stringify({
        cjs: typeof cjs.createAgentRuntime, esm: typeof esm.createAgentRuntime,
        same: cjs.createAgentRuntime === esm.createAgentRuntime,
        guard: types.isToolUseBlock({ type: 'tool_use' }), guardEsm: typesEsm.isErrorBlock({ type: 'text' }),
      }));
    });`;
  const out = execFileSync(process.execPath, ['-e', probe], { cwd: app, encoding: 'utf8' });
  assert.deepEqual(JSON.parse(out), { cjs: 'function', esm: 'function', same: true, guard: true, guardEsm: false });

  const entry = compileSeed(app);
  const server = runSeed(entry);
  try {
    await server.ready;
    await exerciseSeedServer();
  } finally {
    assert.equal(await stop(server.child), 0, server.output());
    fs.rmSync(app, { recursive: true, force: true });
  }
});
