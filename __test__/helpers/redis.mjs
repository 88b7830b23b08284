// A throwaway Redis for the cluster tests and benchmark: `redis-server` on a free loopback port,
// no persistence (no RDB, no AOF), in a temp dir. restart() brings it back on the same port with
// no data, as a crash of a cache-only Redis would. Without redis-server on PATH this throws (the
// cluster tests must fail, not skip, when they cannot run), naming the install command.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const INSTALL_HINT = 'redis-server not found: apt-get install redis-server';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Absolute path of `redis-server` on PATH; throws naming the install command otherwise. */
export function findRedisServer() {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, 'redis-server');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {}
  }
  throw new Error(INSTALL_HINT);
}

/** A loopback port nobody listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves true when a Redis on `port` answers `PING` with `+PONG` within `timeoutMs`. */
export function ping(port, { host = '127.0.0.1', timeoutMs = 1000 } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host });
    let buf = '';
    let settled = false;
    const done = (ok) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      buf += d;
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
    });
    sock.on('error', () => done(false));
    sock.on('close', () => done(false));
  });
}

/**
 * Start a redis-server. Resolves `{ url, port, stop(), start(), restart(), pid(), log() }`:
 *   stop()     ends it (SIGTERM, or `{ signal: 'SIGKILL' }`), bounded; its data is gone
 *   start()    starts it again on the same port (after stop())
 *   restart()  stop() then start(), `{ downMs }` apart (default 0)
 */
export async function startRedis({ port, startTimeoutMs = 15_000 } = {}) {
  const bin = findRedisServer();
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'arn-redis-'));
  let child = null;
  let exited = null;
  let log = '';
  const keep = (d) => (log = (log + d).slice(-20_000));
  const alive = () => child && child.exitCode === null && child.signalCode === null;

  async function start() {
    if (alive()) throw new Error('redis-server is already running');
    // Nothing is saved, but Redis wants a writable working directory.
    const dir = path.join(base, 'data');
    fs.mkdirSync(dir, { recursive: true });
    log = '';
    child = spawn(
      bin,
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning'],
      { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const me = child;
    exited = new Promise((resolve) => me.once('exit', (code, signal) => resolve({ code, signal })));
    const deadline = Date.now() + startTimeoutMs;
    for (;;) {
      if (!alive()) {
        const { code, signal } = await exited;
        throw new Error(`redis-server exited at start on port ${port} (${signal ?? code}):\n${log}`);
      }
      if (await ping(port, { timeoutMs: 500 })) return;
      if (Date.now() > deadline) {
        me.kill('SIGKILL');
        throw new Error(`redis-server did not answer PING on port ${port} within ${startTimeoutMs} ms:\n${log}`);
      }
      await sleep(25);
    }
  }

  async function stop({ signal = 'SIGTERM', timeoutMs = 10_000 } = {}) {
    if (alive()) {
      child.kill(signal);
      const timer = sleep(timeoutMs).then(() => 'timeout');
      if ((await Promise.race([exited, timer])) === 'timeout') {
        child.kill('SIGKILL');
        await exited;
      }
    }
    fs.rmSync(path.join(base, 'data'), { recursive: true, force: true });
  }

  const cleanup = () => {
    if (alive()) child.kill('SIGKILL');
    fs.rmSync(base, { recursive: true, force: true });
  };
  process.once('exit', cleanup);

  // A port picked by freePort() can be taken by someone else before Redis binds it: pick again.
  const fixed = port !== undefined;
  for (let attempt = 0; ; attempt++) {
    if (!fixed) port = await freePort();
    try {
      await start();
      break;
    } catch (err) {
      if (fixed || attempt >= 2 || !/Address already in use/i.test(err.message)) {
        cleanup();
        process.removeListener('exit', cleanup);
        throw err;
      }
    }
  }

  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    pid: () => (alive() ? child.pid : null),
    log: () => log,
    start,
    async stop(opts) {
      await stop(opts);
    },
    async restart({ downMs = 0, signal } = {}) {
      await stop({ signal });
      if (downMs) await sleep(downMs);
      await start();
    },
    /** stop() and remove the temp dir; the handle is done. */
    async close() {
      await stop();
      process.removeListener('exit', cleanup);
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
}
