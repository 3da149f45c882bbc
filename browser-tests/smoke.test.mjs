// The browser can reach a running gateway: the harness itself works end to end.
import { test } from "node:test";
import assert from "node:assert/strict";
import { launchBrowser, startGateway, startUpstream } from "./lib/harness.mjs";

test("chromium loads the gateway's health endpoint", async () => {
  const upstream = await startUpstream();
  const gw = await startGateway(`
[server]
listen = "{listen}"
[storage]
path = ":memory:"
[[route]]
name = "hook"
path = "/hook"
[route.upstream]
url = "${upstream.url}/hook"
`);
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    const resp = await page.goto(`${gw.base}/_hookwarden/healthz`);
    assert.equal(resp.status(), 200);
    assert.equal((await page.textContent("body")).trim(), "ok");
    assert.equal(upstream.requests.length, 0);
  } finally {
    await browser.close();
    await gw.stop();
    await upstream.close();
  }
});
