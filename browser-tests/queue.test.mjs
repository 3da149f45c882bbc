// The dashboard's delivery queue panel in headless Chromium against the real binary: depth per
// route, dead letters with their last error, and the Retry and Drop buttons.
import { test } from "node:test";
import assert from "node:assert/strict";
import { collectErrors, eventually, freePort, launchBrowser, startGateway, startUpstream } from "./lib/harness.mjs";

const TOKEN = "browser-test-admin-token-5f3a9c";

test("the queue panel shows dead letters with their last error, and retries and drops them", async () => {
  // The upstream refuses every delivery: each message is dead-lettered after one attempt.
  const upstream = await startUpstream((req, res) => {
    res.writeHead(400, { "content-type": "application/json" });
    res.end('{"error":"unknown customer"}');
    return true;
  });
  const adminPort = await freePort();
  const gw = await startGateway(`
[server]
listen = "{listen}"
[storage]
path = ":memory:"
[admin]
listen = "127.0.0.1:${adminPort}"
token = "${TOKEN}"
[[route]]
name = "calls"
path = "/calls"
mode = "async"
[route.upstream]
url = "${upstream.url}/calls"
[route.delivery]
backoff = "10ms"
`);
  const admin = `http://127.0.0.1:${adminPort}`;
  const browser = await launchBrowser();
  try {
    const ids = [];
    for (const n of [1, 2]) {
      const r = await fetch(`${gw.base}/calls`, {
        method: "POST", headers: { "content-type": "application/json" }, body: `{"call":${n}}`,
      });
      assert.equal(r.status, 202);
      ids.push((await r.json()).id);
    }
    assert.equal(await eventually(() => upstream.requests.length, (n) => n === 2), 2);

    const page = await browser.newPage({ viewport: { width: 1300, height: 1000 } });
    const errors = collectErrors(page);
    await page.goto(`${admin}/#token=${TOKEN}`);
    await page.waitForSelector("body[data-loaded=true]", { timeout: 10000 });
    await page.waitForFunction(() => document.querySelectorAll("#queue-dead tbody tr[data-id]").length === 2);
    const route = await page.innerText('#queue-routes tr[data-route="calls"]');
    assert.match(route, /calls\s+0\s+–\s+2\s+0/);
    for (const id of ids) {
      const row = await page.innerText(`#queue-dead tr[data-id="${id}"]`);
      assert.match(row, /HTTP 400 Bad Request: \{"error":"unknown customer"\}/);
      assert.match(row, /\b400\b/);
    }
    assert.match(await page.innerText('#routes-table tr[data-route="calls"]'), /async/);

    // Drop the first: it disappears, nothing is sent.
    await page.click(`#queue-dead tr[data-id="${ids[0]}"] button.drop`);
    await page.waitForFunction(() => document.querySelectorAll("#queue-dead tbody tr[data-id]").length === 1);
    assert.equal(upstream.requests.length, 2);
    // Retry the second: delivered again (and refused again).
    await page.click(`#queue-dead tr[data-id="${ids[1]}"] button.retry`);
    assert.equal(await eventually(() => upstream.requests.length, (n) => n === 3), 3);
    assert.equal(upstream.requests[2].headers["x-hookwarden-delivery"], ids[1]);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await gw.stop();
    await upstream.close();
  }
});
