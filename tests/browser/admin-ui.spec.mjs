// The web admin UI: log in, create an app, create a key whose secret is shown once (and not
// after a reload), cookie flags and security headers; a screenshot of the apps page.
// Needs ELVES_UI_EMAIL and ELVES_UI_PASSWORD of an admin.
import { join } from 'node:path';

export default async function ({ page, context, env, outDir, check }) {
  const resp = await page.goto('/ui/login');
  const h = resp.headers();
  check(h['x-frame-options'] === 'DENY', `X-Frame-Options: ${h['x-frame-options']}`);
  check((h['content-security-policy'] || '').includes("script-src 'self'"), 'CSP');
  check(!('access-control-allow-origin' in h), 'no CORS header');

  await page.fill('input[name=email]', env.ELVES_UI_EMAIL);
  await page.fill('input[name=password]', env.ELVES_UI_PASSWORD);
  await Promise.all([page.waitForURL('**/ui/apps'), page.click('button[type=submit]')]);

  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'elves_session');
  check(session, `a session cookie: ${JSON.stringify(cookies)}`);
  check(session.httpOnly && session.secure && session.sameSite === 'Strict',
    `session cookie flags: ${JSON.stringify(session)}`);
  check(session.value.length === 64, 'a 256-bit session id');

  // Create an app (htmx-boosted form, then the app's page).
  await page.fill('input[name=app]', 'browserapp');
  await page.fill('input[name=title]', 'Browser test app');
  await Promise.all([
    page.waitForURL('**/ui/apps/browserapp'),
    page.click('form[action="/ui/apps"] button[type=submit]'),
  ]);
  await page.waitForSelector('text=app browserapp created');

  // Create a key: the secret is shown once.
  await page.fill('form[action$="/keys"] input[name=name]', 'from the browser');
  await page.click('form[action$="/keys"] button[type=submit]');
  const secretEl = await page.waitForSelector('#new-auth-key');
  const secret = (await secretEl.textContent()).trim();
  const authId = (await page.textContent('#new-auth-id')).trim();
  check(/^[A-Za-z0-9]{32}$/.test(secret), `a 32-character secret: ${secret}`);
  check(/^[0-9A-F]{16}$/.test(authId), `an auth_id: ${authId}`);
  check((await page.content()).includes('from the browser'), 'the key is listed');

  // Not on reload, nor anywhere in the page.
  await page.reload();
  await page.waitForSelector(`text=${authId}`);
  check((await page.$('#new-auth-key')) === null, 'no secret box after a reload');
  check(!(await page.content()).includes(secret), 'the secret is not in the page after a reload');

  await page.goto('/ui/apps');
  await page.waitForSelector('a[href="/ui/apps/browserapp"]');
  check(!(await page.content()).includes(secret), 'the secret is not on the apps page');
  await page.screenshot({ path: join(outDir, 'apps.png'), fullPage: true });

  // A POST without the CSRF token is refused.
  const forged = await page.request.post('/ui/apps', {
    form: { app: 'forged', title: 'x' },
    headers: { 'x-csrf-token': 'wrong' },
  });
  check(forged.status() === 403, `forged POST: ${forged.status()}`);

  // Logout ends the session.
  await Promise.all([page.waitForURL('**/ui/login'), page.click('text=Log out')]);
  await page.goto('/ui/apps');
  check(page.url().endsWith('/ui/login'), `after logout: ${page.url()}`);
}
