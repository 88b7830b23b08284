#!/usr/bin/env node
// Builds the native addon from source with cargo and copies it next to binding.js.
// Runs as the package's `install` script, so `npm install` (in a clone or in a consumer app)
// needs only cargo and node. Honours CARGO_TARGET_DIR; when installed inside node_modules
// without one, the ~0.5 GB target dir is removed after the copy.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { localBinaryName } = require('../binding-name.js');

const root = path.resolve(__dirname, '..');
const profile = process.env.AGENT_RUNTIME_NATIVE_PROFILE === 'debug' ? 'debug' : 'release';
const insideNodeModules = root.split(path.sep).includes('node_modules');
const targetDir = process.env.CARGO_TARGET_DIR
  ? path.resolve(process.env.CARGO_TARGET_DIR)
  : path.join(root, 'target');

const args = ['build', '--manifest-path', path.join(root, 'napi', 'Cargo.toml'), '--target-dir', targetDir];
if (profile === 'release') args.push('--release');
if (fs.existsSync(path.join(root, 'Cargo.lock'))) args.push('--locked');

console.error(`[agent-runtime-native] cargo ${args.join(' ')}`);
const r = spawnSync('cargo', args, { stdio: 'inherit', cwd: root });
if (r.error) {
  console.error(`[agent-runtime-native] could not run cargo (${r.error.message}). Install Rust (https://rustup.rs) and retry.`);
  process.exit(1);
}
if (r.status !== 0) process.exit(r.status ?? 1);

const libName = { darwin: 'libagent_runtime_node.dylib', win32: 'agent_runtime_node.dll' }[process.platform]
  ?? 'libagent_runtime_node.so';
const built = path.join(targetDir, profile, libName);
const dest = path.join(root, localBinaryName());
// Copy to a temp name then rename, so a running process never loads a half-written file.
fs.copyFileSync(built, dest + '.tmp');
fs.renameSync(dest + '.tmp', dest);
console.error(`[agent-runtime-native] built ${path.basename(dest)}`);

if (insideNodeModules && !process.env.CARGO_TARGET_DIR) {
  fs.rmSync(targetDir, { recursive: true, force: true });
}
