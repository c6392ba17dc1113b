// Drives Debian's Chromium with playwright-core for idmq's Go browser test (e2e/browser_test.go).
//
// Usage: node driver.mjs   with BROWSER_EXECUTABLE, BROWSER_USER_DATA_DIR and BROWSER_TRUSTED_SPKI (base64
// SHA-256 of the test server certificate's SubjectPublicKeyInfo) in the environment.
// Protocol: one JSON command per stdin line, one JSON reply per stdout line, in order:
//   {"cmd":"open","url":U}                         load U in a fresh tab (closing the previous one)
//   {"cmd":"wait","states":[S...],"timeout_ms":N}  wait until <body data-state> is one of S; reply with the DOM
//   {"cmd":"screenshot","path":P}                  full-page PNG of the current tab
// Every reply: {"ok":bool,"error":string,"state":string,"dom":{...},"console":[lines since the last reply]}.
// stdin EOF closes the browser and exits. The first stdout line is {"ok":true,"ready":true,"version":V}.
import { createInterface } from 'node:readline';
import process from 'node:process';

import { chromium } from 'playwright-core';

function need(name) {
  const v = process.env[name];
  if (!v) {
    process.stderr.write(`browser driver: ${name} is required\n`);
    process.exit(2);
  }
  return v;
}

// Trust comes from one pinned key, never from --ignore-certificate-errors: any other certificate error
// (another key, a wrong host) still fails. Chromium honours the SPKI list only with --user-data-dir, which
// launchPersistentContext passes.
const args = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  `--ignore-certificate-errors-spki-list=${need('BROWSER_TRUSTED_SPKI')}`,
];

const context = await chromium.launchPersistentContext(need('BROWSER_USER_DATA_DIR'), {
  executablePath: need('BROWSER_EXECUTABLE'),
  headless: true,
  args,
  timeout: 30_000,
  viewport: { width: 900, height: 600 },
});

let page = null;
let consoleLines = [];

function reply(r) {
  process.stdout.write(`${JSON.stringify({ ok: true, error: '', ...r, console: consoleLines })}\n`);
  consoleLines = [];
}

async function dom() {
  if (!page) return { state: '', dom: {} };
  return page.evaluate(() => {
    const text = (id) => document.getElementById(id)?.textContent ?? '';
    return {
      state: document.body?.dataset.state ?? '',
      dom: {
        origin: text('origin'),
        status: text('status'),
        user: text('user'),
        expires: text('expires'),
        error: text('error'),
        messages: [...document.querySelectorAll('#messages li')].map((li) => li.textContent),
      },
    };
  });
}

async function run(c) {
  switch (c.cmd) {
    case 'open': {
      if (page) await page.close();
      page = await context.newPage();
      page.on('console', (m) => consoleLines.push(`console.${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
      page.on('requestfailed', (r) => consoleLines.push(`requestfailed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
      await page.goto(c.url, { waitUntil: 'load', timeout: 15_000 });
      return {};
    }
    case 'wait': {
      try {
        await page.waitForFunction((states) => states.includes(document.body?.dataset.state),
          c.states, { timeout: c.timeout_ms ?? 15_000, polling: 50 });
        return await dom();
      } catch (err) {
        return { ok: false, error: `waiting for state ${c.states.join('|')}: ${err.message.split('\n')[0]}`, ...(await dom()) };
      }
    }
    case 'screenshot':
      await page.screenshot({ path: c.path, fullPage: true });
      return {};
    default:
      return { ok: false, error: `unknown command ${JSON.stringify(c.cmd)}` };
  }
}

reply({ ready: true, version: context.browser()?.version() ?? '' });

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  try {
    reply(await run(JSON.parse(line)));
  } catch (err) {
    reply({ ok: false, error: err.message.split('\n')[0] });
  }
}
await context.close();
