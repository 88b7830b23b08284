// The sandbox image recipe the Rust provider builds (src/sandbox/modal/image.rs), written again
// here so the official SDK can build the very same image: same recipe, same image id, shared cache.
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));

export function appPackageJson() {
  return JSON.stringify({
    name: 'agent-runtime-sandbox',
    private: true,
    type: 'module',
    dependencies: {
      '@anthropic-ai/claude-agent-sdk': pkg.dependencies['@anthropic-ai/claude-agent-sdk'],
      '@opencode-ai/sdk': pkg.devDependencies['@opencode-ai/sdk'],
      'opencode-ai': pkg.devDependencies['opencode-ai'],
    },
  });
}

export function imageCommands() {
  const b64 = Buffer.from(appPackageJson()).toString('base64');
  return [
    'RUN apt-get update && apt-get install -y --no-install-recommends ripgrep && rm -rf /var/lib/apt/lists/*',
    'RUN mkdir -p /app /workspace /mcps',
    `RUN echo '${b64}' | base64 -d > /app/package.json`,
    'WORKDIR /app',
    'RUN npm install --omit=dev --no-audit --no-fund',
    'WORKDIR /workspace',
  ];
}
