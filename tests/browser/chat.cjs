// Drives headless Chromium (Debian's /usr/bin/chromium) with playwright-core,
// for tests/tests/browser.rs, which starts chatd and websocketd first and
// checks what this prints. Two scenarios:
//
//   node chat.cjs chat      CHAT_URL: the demo page (websocketd/www), opened in
//                           two tabs that chat; chatd is restarted midway
//                           (through stdin/stdout, see restartChatd) and both
//                           tabs must reconnect.
//   node chat.cjs origins   OTHER_URL: a page of another origin, which tries
//                           REFUSING_WS (a websocketd with the default,
//                           same-origin policy) and LISTED_WS (one started with
//                           --origin for it).
//
// playwright-core comes from NODE_PATH (tests/run installs it under
// target/node). Every wait has a timeout; on failure this prints what the pages
// showed and exits 1.
'use strict';

const readline = require('node:readline');
const { chromium } = require('playwright-core');

// Longest any one wait may take.
const WAIT_MS = 10000;
// Longest the whole scenario may take: then the browser is closed, and we exit.
const SCENARIO_MS = 45000;

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
];

const pages = new Map(); // label -> Page, for the report on failure

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

async function openTab(context, label, url) {
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  pages.set(label, page);
  page.on('console', (m) => console.log(`${label} console ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console.log(`${label} page error: ${e.message}`));
  await page.goto(url);
  return page;
}

// What the page shows as its connection state (role=status).
function connectionState(page) {
  return page.getByRole('status');
}

async function waitForState(page, pattern) {
  await connectionState(page).filter({ hasText: pattern }).waitFor();
}

// Types `text` into the box labelled "Message" and sends it, by Enter or with
// the Send button.
async function say(page, text, how) {
  const box = page.getByLabel('Message', { exact: true });
  await box.pressSequentially(text);
  if (how === 'enter') {
    await box.press('Enter');
  } else {
    await page.getByRole('button', { name: 'Send' }).click();
  }
}

// Waits until the message log shows a line that is exactly `text`.
async function waitForLine(page, text) {
  await page.getByRole('log').getByText(text, { exact: true }).waitFor();
}

async function report() {
  for (const [label, page] of pages) {
    if (page.isClosed()) continue;
    if (await connectionState(page).count() === 0) continue; // not the chat page
    const state = await connectionState(page).textContent({ timeout: 1000 }).catch((e) => `? (${e.message})`);
    console.log(`${label} state: ${state}`);
    const lines = await page.getByRole('log').getByRole('listitem').allTextContents().catch(() => []);
    for (const line of lines) console.log(`${label} log: ${line}`);
    // Anything user text made into markup would show here.
    const elements = await page.getByRole('log').locator('li *').count().catch(() => -1);
    console.log(`${label} elements inside log lines: ${elements}`);
  }
}

// The lines the test writes on our stdin.
const stdin = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

// Asks the test to do `what` (a line on stdout), and waits for its answer `done`.
async function askTest(what, done) {
  console.log(`step: ${what}`);
  const timeout = new Promise((_, reject) => {
    setTimeout(() => reject(new Error(`no "${done}" from the test`)), WAIT_MS).unref();
  });
  const line = await Promise.race([stdin.next(), timeout]);
  if (line.done || line.value !== done) {
    throw new Error(`expected "${done}" from the test, got ${JSON.stringify(line.value)}`);
  }
}

async function chat(browser) {
  const url = env('CHAT_URL');
  const context = await browser.newContext();
  // Tab A joins, says hello; its own line coming back means the room has it.
  const a = await openTab(context, 'A', url);
  await waitForState(a, /^connected$/);
  await say(a, 'hello from A', 'enter');
  await waitForLine(a, 'hello from A');
  // Tab B joins after that: it sees what is said from now on.
  const b = await openTab(context, 'B', url);
  await waitForState(b, /^connected$/);
  await say(b, 'hello from B', 'button');
  await waitForLine(b, 'hello from B');
  await waitForLine(a, 'hello from B');
  // Markup typed by a user stays text.
  const tricky = '<b>bold?</b> & "quotes" <img src=x onerror=alert(1)> ✓';
  await say(a, tricky, 'enter');
  await waitForLine(b, tricky);
  await waitForLine(a, tricky);
  // The service goes away: both tabs say so, and come back once it is back.
  await askTest('stop chatd', 'stopped');
  await waitForState(a, /^disconnected/);
  await waitForState(b, /^disconnected/);
  console.log('both tabs disconnected');
  await askTest('start chatd', 'started');
  // Retries come after 0.5-1 s, then 1-2 s, 2-4 s: within WAIT_MS.
  await waitForState(a, /^connected$/);
  await waitForState(b, /^connected$/);
  await say(b, 'back again', 'enter');
  await waitForLine(a, 'back again');
  await waitForLine(b, 'back again');
}

// Opens a WebSocket from `page` to `url`; says whether it opened and, if so,
// what came back for a message.
function tryWebSocket(page, url) {
  return page.evaluate(([url, waitMs]) => new Promise((resolve) => {
    const ws = new WebSocket(url);
    const give = (result) => { clearTimeout(timer); ws.onclose = null; ws.close(); resolve(result); };
    const timer = setTimeout(() => give(`no answer within ${waitMs} ms`), waitMs);
    ws.onopen = () => ws.send('hello from elsewhere');
    ws.onmessage = (e) => give(`open, echo: ${e.data}`);
    ws.onclose = (e) => give(`closed before opening, code ${e.code}`);
  }), [url, WAIT_MS]);
}

async function origins(browser) {
  const context = await browser.newContext();
  const page = await openTab(context, 'other', env('OTHER_URL'));
  console.log(`page origin: ${await page.evaluate(() => location.origin)}`);
  console.log(`default policy: ${await tryWebSocket(page, env('REFUSING_WS'))}`);
  console.log(`listed origin: ${await tryWebSocket(page, env('LISTED_WS'))}`);
}

async function main() {
  const scenario = { chat, origins }[process.argv[2]];
  if (!scenario) throw new Error(`usage: chat.cjs chat|origins (got ${process.argv[2]})`);
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ARGS,
    timeout: 30000,
  });
  // Playwright gives the browser a fresh profile in a temporary directory
  // (under TMPDIR) and removes it on close.
  console.log(`browser: Chromium ${browser.version()}`);
  const watchdog = setTimeout(() => {
    console.log(`FAILED: scenario still running after ${SCENARIO_MS} ms`);
    report().finally(() => browser.close()).finally(() => process.exit(1));
  }, SCENARIO_MS);
  try {
    await scenario(browser);
    await report();
    console.log('done');
  } catch (e) {
    console.log(`FAILED: ${e.message}`);
    await report();
    process.exitCode = 1;
  } finally {
    clearTimeout(watchdog);
    await browser.close();
    process.exit();
  }
}

main().catch((e) => {
  console.log(`FAILED: ${e.stack || e}`);
  process.exit(1);
});
