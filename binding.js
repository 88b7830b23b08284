'use strict';
// Loads the native addon: the one built from source next to this file first, then a
// per-platform package (npm/<triple>) if one is installed.
const path = require('node:path');
const { platformTriple, localBinaryName } = require('./binding-name.js');

function load() {
  const local = path.join(__dirname, localBinaryName());
  const errors = [];
  for (const candidate of [local, `agent-runtime-native-${platformTriple()}`]) {
    try {
      return require(candidate);
    } catch (e) {
      errors.push(`${candidate}: ${e.message}`);
    }
  }
  throw new Error(
    `agent-runtime-native: no native addon for ${platformTriple()}. ` +
      `Run \`npm rebuild agent-runtime-native\` (needs cargo).\n  ${errors.join('\n  ')}`,
  );
}

module.exports = load();
