// A throwaway PostgreSQL server for tests: initdb in a temp dir, `postgres` listening only on a
// unix socket in that dir (no port to collide with), run as the `postgres` user when we are root
// (the server refuses root). stop() ends it and removes the dir.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

const INSTALL_HINT = 'install them with `apt-get install -y postgresql` (Debian/Ubuntu)';

/** The directory holding initdb and postgres: `pg_config --bindir`, else the newest /usr/lib/postgresql/<v>/bin. */
export function findPostgresBin() {
  const has = (dir) => dir && fs.existsSync(path.join(dir, 'initdb')) && fs.existsSync(path.join(dir, 'postgres'));
  try {
    const dir = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (has(dir)) return dir;
  } catch {}
  let versions = [];
  try {
    versions = fs.readdirSync('/usr/lib/postgresql').filter((v) => /^\d+$/.test(v)).sort((a, b) => b - a);
  } catch {}
  for (const v of versions) if (has(`/usr/lib/postgresql/${v}/bin`)) return `/usr/lib/postgresql/${v}/bin`;
  throw new Error(`PostgreSQL server binaries (initdb, postgres) not found via pg_config or /usr/lib/postgresql/*/bin: ${INSTALL_HINT}`);
}

/** Who runs the server: ourselves, or the `postgres` user when we are root. */
function serverUser() {
  if (process.getuid?.() !== 0) return null;
  let line;
  try {
    line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'));
  } catch {}
  if (!line) throw new Error(`running as root and there is no 'postgres' user to run the server as: ${INSTALL_HINT}`);
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

export async function startPostgres({ startTimeoutMs = 30_000 } = {}) {
  const bin = findPostgresBin();
  const user = serverUser();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arn-pg-'));
  const data = path.join(dir, 'data');
  const as = user ? { uid: user.uid, gid: user.gid } : {};
  if (user) fs.chownSync(dir, user.uid, user.gid);
  const env = { ...process.env, LC_ALL: 'C', LANG: 'C' };
  const port = 5432; // only names the socket file inside `dir`
  let child;
  let log = '';
  const cleanup = () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', cleanup);
  try {
    execFileSync(path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'], {
      ...as,
      env,
      cwd: dir,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = spawn(
      path.join(bin, 'postgres'),
      ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=', '-c', 'fsync=off', '-c', 'max_connections=50'],
      { ...as, env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout.on('data', (d) => (log += d));
    child.stderr.on('data', (d) => (log += d));
    const connection = { host: dir, port, user: 'postgres', database: 'postgres' };
    // Poll until it accepts a connection (bounded), failing early if the server exits.
    const deadline = Date.now() + startTimeoutMs;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`postgres exited at start (${child.exitCode ?? child.signalCode}):\n${log}`);
      const client = new pg.Client(connection);
      try {
        await client.connect();
        await client.query('SELECT 1');
        await client.end();
        break;
      } catch (err) {
        await client.end().catch(() => {});
        if (Date.now() > deadline) throw new Error(`postgres did not accept connections within ${startTimeoutMs} ms (${err.message}):\n${log}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  } catch (err) {
    cleanup();
    process.removeListener('exit', cleanup);
    if (err.stderr) err.message += `\n${err.stderr}`;
    throw err;
  }

  let dbCount = 0;
  return {
    dir,
    bin,
    connection: { host: dir, port, user: 'postgres' },
    /** A new empty database; resolves with its connection string. */
    async createDatabase(prefix = 'arn') {
      const name = `${prefix}_${process.pid}_${++dbCount}`;
      const admin = new pg.Client({ host: dir, port, user: 'postgres', database: 'postgres' });
      await admin.connect();
      try {
        await admin.query(`CREATE DATABASE "${name}"`);
      } finally {
        await admin.end();
      }
      return `postgresql://postgres@/${name}?host=${encodeURIComponent(dir)}&port=${port}`;
    },
    log: () => log,
    /** Fast shutdown (SIGINT), bounded; then the temp dir goes. */
    async stop(timeoutMs = 15_000) {
      process.removeListener('exit', cleanup);
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGINT');
        const timer = new Promise((resolve) => setTimeout(resolve, timeoutMs, 'timeout').unref());
        if ((await Promise.race([exited, timer])) === 'timeout') {
          child.kill('SIGKILL');
          await exited;
        }
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
