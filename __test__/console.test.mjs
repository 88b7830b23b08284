// The web console, as a person uses it: headless Chromium (Debian's, driven by puppeteer-core)
// opens the page served by runtime.createConsole() next to the REST API and Socket.IO of a
// seed-style server, enters the key, creates a session that asks before tools run, and chats
// with the real Claude Agent SDK against the bundled fake model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { agentRuntime } from './helpers/agent.mjs';
import { serve } from './helpers/server.mjs';
import { API_KEY } from './helpers/http.mjs';
import { createAgentRuntime, createConsole } from '../index.mjs';
import { recordingAdapter } from './helpers/adapter.mjs';

const ARTIFACTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'artifacts');
const WAIT = 20_000;

/** Debian's Chromium (or one on PATH), if it starts. */
function findChromium() {
  const candidates = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'];
  for (const name of ['chromium', 'chromium-browser', 'google-chrome']) {
    try {
      candidates.push(execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim());
    } catch {}
  }
  for (const c of candidates) {
    if (!c || !fs.existsSync(c)) continue;
    try {
      execFileSync(c, ['--version'], { stdio: 'ignore', timeout: 10_000 });
      return c;
    } catch {}
  }
  return null;
}

/** What a console under /ops/console must answer, whoever serves it. */
async function checkConsoleFiles(get) {
  const redirect = await get('/ops/console');
  assert.equal(redirect.status, 308);
  assert.equal(redirect.headers.get('location'), '/ops/console/');
  for (const [p, type, needle] of [
    ['/ops/console/', 'text/html', 'Agent runtime console'],
    ['/ops/console/index.html', 'text/html', '<script src="app.js"'],
    ['/ops/console/app.js', 'text/javascript', 'session:join'],
    ['/ops/console/style.css', 'text/css', '.conversation'],
    ['/ops/console/socket.io.min.js', 'text/javascript', 'Socket.IO'],
  ]) {
    const r = await get(p);
    assert.equal(r.status, 200, p);
    assert.ok(r.headers.get('content-type').startsWith(type), `${p}: ${r.headers.get('content-type')}`);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    assert.match(r.headers.get('content-security-policy'), /script-src 'self'/);
    assert.ok((await r.text()).includes(needle), `${p} has ${needle}`);
  }
  const head = await get('/ops/console/app.js', 'HEAD');
  assert.equal(head.status, 200);
  assert.equal(await head.text(), '');
  assert.equal((await get('/ops/console/app.js', 'POST')).status, 405);
  for (const p of ['/ops/console/../package.json', '/ops/console/%2e%2e/package.json', '/ops/console/..%2Findex.js', '/ops/console/vendor/x.js', '/ops/console/nope.js', '/ops/consolex/', '/console/', '/ops/console//app.js']) {
    const r = await get(p);
    assert.equal(r.status, 404, p);
  }
}

test('console files: known names only, right types, no escaping the directory', async () => {
  const c = createConsole({ basePath: '/ops/console/' });
  assert.equal(c.basePath, '/ops/console');
  await checkConsoleFiles((p, method = 'GET') => c.fetch(new Request(`http://x${p}`, { method })));
  assert.throws(() => createConsole({ basePath: '../x' }), TypeError);
  assert.throws(() => createConsole({ basePath: 5 }), TypeError);
});

test('runtime.listen({ console }) serves the same console from Rust, next to the REST API', async () => {
  const rt = await createAgentRuntime({ persistence: recordingAdapter().adapter, logLevel: 'error' });
  const l = await rt.listen({ apiKey: API_KEY, console: { basePath: '/ops/console' } });
  try {
    const base = `http://127.0.0.1:${l.port}`;
    await checkConsoleFiles((p, method = 'GET') => fetch(`${base}${p}`, { method, redirect: 'manual' }));
    assert.equal((await fetch(`${base}/api/sessions`)).status, 401, 'the API keeps its key');
    await assert.rejects(rt.listen({ apiKey: API_KEY, console: { basePath: 'no slash' } }), /listen: console: basePath/);
  } finally {
    l.close();
    await rt.shutdown();
  }
});

test('console in Chromium: key, sessions, streamed text, tool approval, question, subagent, interrupt, reload', { timeout: 120_000 }, async (t) => {
  const chromium = findChromium();
  if (!chromium) {
    t.skip('no Chromium found: install it with `apt-get install -y chromium` (or set CHROMIUM_PATH)');
    return;
  }
  const { default: puppeteer } = await import('puppeteer-core');
  const h = await agentRuntime();
  const srv = await serve(h.rt, { ws: { apiKey: API_KEY }, mounts: { '/console': h.rt.createConsole().fetch } });
  const args = ['--disable-dev-shm-usage', '--disable-gpu', '--no-first-run', '--no-default-browser-check'];
  if (process.getuid?.() === 0) args.push('--no-sandbox');
  let browser;
  try {
    browser = await puppeteer.launch({ executablePath: chromium, headless: true, args, timeout: 30_000 });
  } catch (err) {
    await srv.close();
    await h.close();
    t.skip(`Chromium at ${chromium} did not start (${err.message.split('\n')[0]}); install it with \`apt-get install -y chromium\``);
    return;
  }
  const pageErrors = [];
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(WAIT);
    await page.setViewport({ width: 1280, height: 1000 });
    page.on('pageerror', (err) => pageErrors.push(err.message));

    // A wrong key is refused, with a message; the right one lists the sessions.
    await page.goto(`${srv.url}/console`);
    await page.waitForSelector('#api-key');
    await page.type('#api-key', 'wrong-key');
    await page.click('#connect-form button[type=submit]');
    await page.waitForFunction(() => !document.getElementById('notice').hidden && /refused/.test(document.getElementById('notice').textContent));
    assert.equal(await page.$eval('#app-view', (e) => e.hidden), true);
    await page.type('#api-key', API_KEY);
    await page.click('#connect-form button[type=submit]');
    await page.waitForSelector('#app-view:not([hidden])');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('agentConsole.apiKey')), API_KEY, 'the key is kept in the tab');
    await page.waitForFunction(() => document.querySelector('#create-profile option[value="default"]'));
    await page.waitForFunction(() => document.getElementById('connection').textContent === 'Connected (live)');

    // A session made elsewhere, then unloaded, is listed as stored.
    const other = (await srv.rest('POST', '/api/sessions', { agentProfileRef: 'default', architecture: 'claude-agent-sdk' })).body.sessionId;
    assert.equal((await srv.rest('DELETE', `/api/sessions/${other}`)).status, 200);
    await page.click('#refresh-sessions');
    const stored = await page.waitForSelector(`.session-item[data-session-id="${other}"]`);
    assert.match(await stored.evaluate((e) => e.textContent), /claude-agent-sdk · default · stored/);

    // Create a session whose tool calls wait for approval; it opens.
    await page.select('#create-permission', 'ask');
    await page.click('#create-form button[type=submit]');
    await page.waitForFunction(() => /^Session /.test(document.getElementById('session-title').textContent) && !document.getElementById('session-view').hidden);
    const id = await page.$eval('.session-item[aria-current="true"]', (e) => e.dataset.sessionId);
    assert.notEqual(id, other);
    assert.equal((await srv.rest('GET', `/api/sessions/${id}`)).body.sessionOptions.permissionMode, 'ask');
    assert.match(await page.$eval('#sandbox-status', (e) => e.textContent), /none/);

    const send = async (text) => {
      await page.type('#message', text);
      await page.click('#message-form button[type=submit]');
      await page.waitForFunction(() => document.getElementById('message').value === '');
    };
    const assistantTexts = () => page.$$eval('#conversation > li[data-type="assistant_text"] .text', (els) => els.map((e) => e.textContent));

    // 1. Streamed text: seen growing word by word, then whole. HTML in the prompt stays text.
    //    Every text the assistant's block shows is recorded as it changes.
    await page.evaluate(() => {
      window.__shown = [];
      new MutationObserver(() => {
        for (const e of document.querySelectorAll('#conversation > li[data-type="assistant_text"] .text')) {
          if (window.__shown.at(-1) !== e.textContent) window.__shown.push(e.textContent);
        }
      }).observe(document.getElementById('conversation'), { subtree: true, childList: true, characterData: true });
    });
    const story = 'Once upon a time a small robot lived in a lighthouse by';
    await send('tell it slowly 60ms 12 words <img src=x onerror="window.__xss=1">');
    await page.waitForFunction((text) => [...document.querySelectorAll('#conversation > li[data-type="assistant_text"] .text')].some((e) => e.textContent === text), {}, story);
    const shown = await page.evaluate(() => window.__shown);
    const partial = shown.filter((x) => x.length < story.length && story.startsWith(x.trimEnd()) && x.startsWith('Once'));
    assert.ok(partial.length >= 5, `the text grew on screen as it streamed: ${JSON.stringify(shown)}`);
    await page.waitForFunction(() => [...document.querySelectorAll('#conversation li[data-type="system"]')].some((e) => /Turn ended: completed/.test(e.textContent)));
    const user = await page.$eval('#conversation > li[data-type="user_message"] .text', (e) => e.textContent);
    assert.ok(user.includes('<img src=x onerror="window.__xss=1">'), 'the prompt is shown as text');
    assert.equal(await page.$('#conversation img'), null, 'no element made from the text');
    assert.equal(await page.evaluate(() => window.__xss), undefined);
    await page.waitForFunction(() => /ready/.test(document.getElementById('sandbox-status').textContent));
    await page.waitForFunction(() => /tokens/.test(document.getElementById('usage').textContent));

    // 2. A Write call waits for approval; the card names the tool and the file; Allow lets the
    //    turn go on: the tool block shows the file and succeeds, the file is listed.
    await send('write haiku.txt');
    await page.waitForSelector('#requests:not([hidden]) article.request.permission');
    const card = await page.$eval('article.request.permission', (e) => e.querySelector('h4').textContent);
    assert.match(card, /Write/);
    assert.match(card, /haiku\.txt/);
    const tool = await page.waitForSelector('#conversation > li[data-type="tool_use"][data-tool-name="Write"]');
    assert.match(await tool.evaluate((e) => e.querySelector('.subject').textContent), /haiku\.txt/);
    assert.equal(await page.evaluate(() => document.querySelectorAll('#files li').length), 0, 'nothing written before the approval');
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'console.png'), fullPage: true });
    await page.click('article.request.permission button.allow');
    await page.waitForSelector('#requests[hidden]');
    await page.waitForFunction(() => [...document.querySelectorAll('#conversation li[data-type="request-resolved"]')].some((e) => /^Write \S*haiku\.txt: allowed$/.test(e.textContent)));
    await page.waitForFunction(() => (document.querySelector('#conversation > li[data-type="tool_use"][data-tool-name="Write"] .status') || {}).textContent === 'success');
    await page.waitForSelector('#conversation > li[data-type="tool_use"][data-tool-name="Write"] .extras > .result');
    await page.waitForSelector('#files li[data-path="haiku.txt"]');
    await page.waitForFunction(() => [...document.querySelectorAll('#conversation > li[data-type="assistant_text"] .text')].some((e) => e.textContent === 'Done: the Write step finished.'));
    assert.equal(await page.$eval('#files li[data-path="haiku.txt"] pre', (e) => e.textContent), 'Old pond\nfrog jumps in\nsound of water\n');
    assert.ok((await assistantTexts()).includes("I'll write haiku.txt."));

    // 3. A question: the options are shown; the chosen one reaches the agent.
    await send('ask: Which color do you like? [red|blue]');
    await page.waitForSelector('article.request.question');
    assert.match(await page.$eval('article.request.question legend', (e) => e.textContent), /Which color do you like\?/);
    assert.deepEqual(await page.$$eval('article.request.question input[type=radio]', (els) => els.map((e) => e.value)), ['red', 'blue']);
    await page.click('article.request.question input[value="blue"]');
    await page.click('article.request.question button');
    await page.waitForSelector('#requests[hidden]');
    await page.waitForFunction(() => [...document.querySelectorAll('#conversation > li[data-type="assistant_text"] .text')].some((e) => e.textContent.startsWith('Answer received') && e.textContent.includes('blue')));

    // 4. A subagent: its call (approved) shows the helper's own conversation under it.
    await send('ask the helper to check the haiku');
    await page.waitForSelector('article.request.permission');
    await page.click('article.request.permission button.allow');
    const helper = await page.waitForFunction(() => [...document.querySelectorAll('#conversation > li[data-type="subagent"]')].find((e) => /Helper here/.test(e.textContent)));
    assert.equal(await helper.evaluate((e) => e.querySelector('.status').textContent), 'success');
    assert.match(await helper.evaluate((e) => e.querySelector('.conversation.nested li[data-type="user_message"]').textContent), /Check this: ask the helper/, "the helper's conversation is nested under it");
    await page.waitForFunction(() => [...document.querySelectorAll('#conversation li[data-type="system"]')].filter((e) => /Turn ended: completed/.test(e.textContent)).length === 4);

    // 5. Interrupt stops a turn mid-text.
    await send('tell it slowly 150ms 200 words');
    await page.waitForFunction(() => [...document.querySelectorAll('#conversation > li.streaming[data-type="assistant_text"] .text')].some((e) => e.textContent.startsWith('Once upon')));
    await page.click('#interrupt');
    await page.waitForFunction(() => [...document.querySelectorAll('#conversation li[data-type="system"]')].some((e) => /Turn ended: interrupted/.test(e.textContent)));

    // 6. A reload keeps the key (same tab) and shows the same conversation from the state.
    const before = await page.$$eval('#conversation > li[data-type]', (els) => els.filter((e) => e.dataset.type !== 'request-resolved').map((e) => e.dataset.type));
    await page.reload();
    await page.waitForFunction((n) => document.querySelectorAll('#conversation > li[data-type="assistant_text"]').length >= n, {}, 3);
    assert.equal(await page.$eval('#session-view', (e) => e.hidden), false);
    const after = await page.$$eval('#conversation > li[data-type]', (els) => els.map((e) => e.dataset.type));
    for (const type of ['user_message', 'assistant_text', 'tool_use']) assert.ok(after.includes(type), `${type} after reload (before: ${before})`);
    await page.waitForSelector('#conversation > li[data-type="tool_use"][data-tool-name="Write"] .extras > .result');
    await page.waitForSelector('#conversation > li[data-type="subagent"] .conversation.nested li[data-type="user_message"]');

    assert.deepEqual(pageErrors, [], 'no errors in the page');
  } catch (err) {
    // What the page showed, to tell a UI bug from a runtime one.
    const pages = await browser.pages();
    const shown = await pages.at(-1)?.evaluate(() => document.querySelector('main')?.outerHTML).catch(() => null);
    err.message += `\npage errors: ${JSON.stringify(pageErrors)}\npage: ${shown}`;
    throw err;
  } finally {
    await browser.close();
    await srv.close();
    await h.close();
  }
});
