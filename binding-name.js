'use strict';
// The platform triple in napi-rs's naming (`linux-x64-gnu`, `darwin-arm64`, ...), shared by the
// build script and the loader.
function platformTriple() {
  const { platform, arch } = process;
  if (platform === 'linux') {
    const report = typeof process.report?.getReport === 'function' ? process.report.getReport() : null;
    const glibc = report?.header?.glibcVersionRuntime;
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`;
  }
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

function localBinaryName() {
  return `agent-runtime-native.${platformTriple()}.node`;
}

module.exports = { platformTriple, localBinaryName };
