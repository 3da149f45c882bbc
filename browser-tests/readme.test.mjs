// The README's copy-paste embed example, taken verbatim from README.md, works in Chromium.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  collectErrors,
  freePort,
  launchBrowser,
  servePages,
  startGateway,
  startUpstream,
} from "./lib/harness.mjs";

function embedExample() {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  const section = readme.split("### Embedding it")[1];
  assert.ok(section, "README has no 'Embedding it' section");
  const m = section.match(/```html\n([\s\S]*?)```/);
  assert.ok(m, "no html block in 'Embedding it'");
  return m[1];
}

test("the README's embed example chats through the gateway", { timeout: 60000 }, async () => {
  const snippet = embedExample();
  assert.match(snippet, /https:\/\/gateway\.example\.com\/_hookwarden\/client\.js/);
  const upstream = await startUpstream();
  const pagePort = await freePort();
  const gw = await startGateway(`
[server]
listen = "{listen}"
[storage]
path = ":memory:"
[[route]]
name = "chat"
path = "/chat"
methods = ["POST"]
content_types = ["application/json"]
[route.browser]
allowed_origins = ["http://127.0.0.1:${pagePort}"]
token = true
[route.upstream]
url = "${upstream.url}/sse"
`);
  const html = `<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>
${snippet.replaceAll("https://gateway.example.com", gw.base)}
</body></html>`;
  const pages = await servePages({ "/": html }, pagePort);
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    const errors = collectErrors(page);
    await page.goto(`${pages.origin}/`);
    await page.fill("#q", "What is hookwarden?");
    await page.click("button");
    await page.waitForFunction(() => document.getElementById("reply").textContent === "Hello from the upstream.", null, {
      timeout: 20000,
    });
    assert.equal(upstream.requests.length, 1);
    assert.deepEqual(JSON.parse(upstream.requests[0].body), { message: "What is hookwarden?" });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await gw.stop();
    await pages.close();
    await upstream.close();
  }
});
