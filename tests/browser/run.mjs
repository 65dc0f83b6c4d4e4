// The browser test runner: launches the system's Chromium through playwright-core and runs
// every `*.spec.mjs` of this folder (or those named as arguments) against ELVES_URL (a center,
// or an agent's dashboard).
//
// Each spec exports `default async function (t)` with t = { page, context, baseURL, env, outDir,
// check(cond, msg) }. Environment: ELVES_URL (the center), ELVES_BROWSER_OUT (where screenshots
// go), ELVES_CHROMIUM (default /usr/bin/chromium), and whatever the specs read.
// Exit status 0 only when every spec passed.
import { chromium } from 'playwright-core';
import { readdirSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const baseURL = process.env.ELVES_URL;
const outDir = process.env.ELVES_BROWSER_OUT || join(tmpdir(), 'elves-browser');
if (!baseURL) {
  console.error('run.mjs: set ELVES_URL to the center to test');
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });
const specs = process.argv.slice(2).length
  ? process.argv.slice(2)
  : readdirSync(here).filter((f) => f.endsWith('.spec.mjs')).sort();

const browser = await chromium.launch({
  executablePath: process.env.ELVES_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // Root in CI/containers: Chromium's sandbox needs user namespaces it may not have.
  args: ['--no-sandbox'],
  timeout: 60_000,
});
let failed = 0;
try {
  for (const spec of specs) {
    const context = await browser.newContext({ baseURL });
    const page = await context.newPage();
    page.setDefaultTimeout(15_000);
    const check = (cond, msg) => {
      if (!cond) throw new Error(`check failed: ${msg}`);
    };
    const started = Date.now();
    try {
      const mod = await import(pathToFileURL(join(here, spec)).href);
      await mod.default({ page, context, baseURL, env: process.env, outDir, check });
      console.log(`ok   ${spec} (${Date.now() - started} ms)`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${spec}: ${e && e.stack ? e.stack : e}`);
      await page.screenshot({ path: join(outDir, `${spec}.failure.png`), fullPage: true }).catch(() => {});
    } finally {
      await context.close();
    }
  }
} finally {
  await browser.close();
}
console.log(`${specs.length - failed} of ${specs.length} browser specs passed`);
process.exit(failed ? 1 : 0);
