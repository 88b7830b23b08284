// Runs inside a (remote) sandbox: reports file changes under a directory as JSON lines
// { kind: "created" | "modified" | "deleted", path } with paths relative to it.
// Polls (a stat walk every 250 ms) instead of using inotify: it works on every kernel and file
// system a sandbox may have, and files present at start are not reported.
// Symbolic links are never followed (the agent decides what is in the directory): links inside
// are not reported, and if the directory itself is (or becomes) reached through a link the
// watcher stops with an error rather than walk wherever it points.
import { lstatSync, readdirSync, realpathSync } from 'node:fs';
import { join, resolve } from 'node:path';

if (!process.argv[2]) {
  process.stderr.write('usage: watch.mjs <directory>\n');
  process.exit(2);
}
const root = resolve(process.argv[2]);
const INTERVAL_MS = 250;

/** The root is a real directory reached without links (a missing root is simply empty). */
function rootIsReal() {
  let real;
  try {
    real = realpathSync(root);
  } catch {
    return true;
  }
  if (real === root) return true;
  process.stderr.write(`watch.mjs: ${root} is reached through a symbolic link (to ${real}); not followed\n`);
  process.exit(3);
}

function scan(dir, rel, out) {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    const p = join(dir, e.name);
    try {
      // lstat, and the type checked again: an entry swapped for a link since readdir is skipped.
      const s = lstatSync(p);
      if (e.isDirectory() && s.isDirectory()) scan(p, r, out);
      else if (e.isFile() && s.isFile()) out.set(r, `${s.mtimeMs}:${s.size}`);
    } catch {
      // deleted between readdir and lstat
    }
  }
  return out;
}

rootIsReal();
let known = scan(root, '', new Map());
const emit = (kind, path) => process.stdout.write(JSON.stringify({ kind, path }) + '\n');
setInterval(() => {
  rootIsReal();
  const now = scan(root, '', new Map());
  rootIsReal(); // and still is: nothing from a walk through a link swapped in meanwhile is reported
  for (const [path, sig] of now) {
    const before = known.get(path);
    if (before === undefined) emit('created', path);
    else if (before !== sig) emit('modified', path);
  }
  for (const path of known.keys()) if (!now.has(path)) emit('deleted', path);
  known = now;
}, INTERVAL_MS);
