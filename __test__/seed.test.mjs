// The seed's example server, verbatim, compiled with tsc --strict against this package (imported
// as @hhopkins/agent-runtime) and run as a process; every REST route answers through it.
import { test } from 'node:test';
import fs from 'node:fs';
import assert from 'node:assert/strict';
import { makeConsumer, compileSeed, runSeed, stop, REPO, exerciseSeedServer } from './helpers/seed.mjs';

test('seed example compiles with tsc --strict and serves every REST route', { timeout: 240_000 }, async (t) => {
  const dir = makeConsumer(REPO);
  const entry = compileSeed(dir);
  const server = runSeed(entry);
  try {
    await server.ready;
    await exerciseSeedServer();
  } finally {
    const code = await stop(server.child);
    assert.equal(code, 0, `SIGTERM should shut down cleanly:\n${server.output()}`);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
