// The agent dashboard (issue 7): run a worker through the developer-mode form (signed by
// /dev/sign, then rt/exec on the dashboard listener), reload the page, and see the task that
// just ran in the recent-tasks table. ELVES_URL is the agent's dashboard here.
export default async function ({ page, outDir, check }) {
  await page.goto('/');
  check((await page.title()).startsWith('Elves agent'), 'the dashboard page loads');
  const marker = `browser-${Date.now()}`;
  await page.fill('#devform input[name=app]', 'shapp');
  await page.fill('#devform input[name=func]', 'tick');
  await page.fill('#devform input[name=param]', JSON.stringify({ v: marker }));
  await page.click('#devform button[type=submit]');
  await page.waitForFunction(
    (m) => (document.getElementById('devout').textContent || '').includes(m),
    marker,
  );
  const signed = await page.textContent('#devurl');
  check(signed.includes('/api/v2/rt/exec?') && signed.includes('sign='), `a signed URL: ${signed}`);
  const answer = JSON.parse(await page.textContent('#devout'));
  check(answer.flag === 'true', `the run succeeded: ${JSON.stringify(answer)}`);

  await page.reload();
  const row = page.locator('#tasks tr', { hasText: marker });
  await row.first().waitFor();
  const text = await row.first().textContent();
  check(text.includes('tick') && text.includes('shapp'), `the task's row names app and func: ${text}`);
  await page.screenshot({ path: `${outDir}/agent-dashboard.png`, fullPage: true });
}
