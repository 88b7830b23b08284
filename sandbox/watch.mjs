// Runs inside a (remote) sandbox: reports file changes under a directory as JSON lines
// { kind: "created" | "modified" | "deleted", path } with paths relative to it.
// Polls (a stat walk every 250 ms) instead of using inotify: it works on every kernel and file
// system a sandbox may have, and files present at start are not reported.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = process.argv[2] ?? process.cwd();
const INTERVAL_MS = 250;

function scan(dir, rel, out) {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) scan(join(dir, e.name), r, out);
    else if (e.isFile()) {
      try {
        const s = statSync(join(dir, e.name));
        out.set(r, `${s.mtimeMs}:${s.size}`);
      } catch {
        // deleted between readdir and stat
      }
    }
  }
  return out;
}

let known = scan(root, '', new Map());
const emit = (kind, path) => process.stdout.write(JSON.stringify({ kind, path }) + '\n');
setInterval(() => {
  const now = scan(root, '', new Map());
  for (const [path, sig] of now) {
    const before = known.get(path);
    if (before === undefined) emit('created', path);
    else if (before !== sig) emit('modified', path);
  }
  for (const path of known.keys()) if (!now.has(path)) emit('deleted', path);
  known = now;
}, INTERVAL_MS);
