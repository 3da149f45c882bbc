// The dashboard in headless Chromium against the real binary: it asks for the admin token once,
// loads without console errors, and shows the events that real requests produced.
import { test } from "node:test";
import assert from "node:assert/strict";
import { collectErrors, freePort, launchBrowser, startGateway, startUpstream } from "./lib/harness.mjs";

const TOKEN = "browser-test-admin-token-5f3a9c";

async function setup() {
  const upstream = await startUpstream();
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
name = "hook"
path = "/hook"
content_types = ["application/json"]
[route.upstream]
url = "${upstream.url}/hook"
[[alert]]
name = "scan"
reasons = ["not_found"]
threshold = 50
url = "${upstream.url}/alert"
`);
  const admin = `http://127.0.0.1:${adminPort}`;
  return { upstream, gw, admin };
}

/** Sends real requests through the gateway; returns {id: reason-or-"allowed"}. */
async function traffic(gw) {
  const sent = {};
  const go = async (path, init, expect) => {
    const r = await fetch(`${gw.base}${path}`, init);
    await r.text();
    assert.equal(r.status, expect.status, `${init.method} ${path}`);
    sent[r.headers.get("x-request-id")] = expect.reason;
  };
  const json = { "content-type": "application/json" };
  await go("/hook", { method: "POST", headers: json, body: '{"a":1}' }, { status: 200, reason: "allowed" });
  await go("/hook", { method: "POST", headers: json, body: '{"a":2}' }, { status: 200, reason: "allowed" });
  await go("/hook", { method: "GET" }, { status: 405, reason: "method_not_allowed" });
  await go("/nope", { method: "POST", headers: json, body: "{}" }, { status: 404, reason: "not_found" });
  await go("/hook", { method: "POST", headers: { "content-type": "text/plain" }, body: "x" },
    { status: 415, reason: "unsupported_media_type" });
  return sent;
}

/** Waits until the admin API has every request (the audit writer batches for up to 200 ms). */
async function waitStored(admin, ids) {
  for (let i = 0; i < 100; i++) {
    const r = await fetch(`${admin}/api/events`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const { events } = await r.json();
    if (ids.every((id) => events.some((e) => e.request_id === id))) return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error("events never reached the store");
}

test("the dashboard asks for the token once and shows real events", async () => {
  const { upstream, gw, admin } = await setup();
  const browser = await launchBrowser();
  try {
    const sent = await traffic(gw);
    await waitStored(admin, Object.keys(sent));

    const page = await browser.newPage({ viewport: { width: 1300, height: 1000 } });
    const errors = collectErrors(page);
    const apiWithoutToken = [];
    page.on("request", (r) => {
      if (r.url().includes("/api/") && !r.headers().authorization) apiWithoutToken.push(r.url());
    });
    await page.goto(`${admin}/`);
    await page.waitForSelector("#login:not([hidden])");
    assert.equal(await page.isVisible("#app"), false);
    await page.fill("#token", TOKEN);
    await page.click("#login-form button[type=submit]");
    await page.waitForSelector("body[data-loaded=true]", { timeout: 10000 });

    // Every request appears once, with its reason.
    for (const [id, reason] of Object.entries(sent)) {
      const row = page.locator(`#events-table tbody tr[data-request-id="${id}"]`);
      assert.equal(await row.count(), 1, `row for ${id}`);
      const text = await row.innerText();
      if (reason === "allowed") assert.match(text, /allowed/);
      else assert.match(text, new RegExp(reason));
    }
    assert.equal(await page.textContent("#total-allowed"), "2");
    assert.equal(await page.textContent("#total-denied"), "3");
    // Charts are drawn: stacked bars over time, one bar per denial reason.
    assert.ok((await page.locator("#traffic-chart svg rect.bar.allowed").count()) >= 1);
    assert.ok((await page.locator("#traffic-chart svg rect.bar.denied").count()) >= 1);
    for (const reason of ["not_found", "method_not_allowed", "unsupported_media_type"]) {
      assert.equal(await page.locator(`#reasons-chart rect[data-reason="${reason}"]`).count(), 1, reason);
    }
    assert.match(await page.innerText("#top-ips"), /127\.0\.0\.1\s+3/);
    // Routes and their policies; alert rules.
    const route = await page.innerText('#routes-table tr[data-route="hook"]');
    assert.match(route, /\/hook/);
    assert.match(route, /content_type/);
    assert.match(route, /scan/);
    assert.match(await page.innerText("#alert-rules"), /50 in 5m/);

    // Filters: only denied events.
    await page.selectOption("#f-outcome", "denied");
    await page.click("#filters button[type=submit]");
    await page.waitForFunction(() => document.querySelectorAll("#events-table tbody tr").length === 3);
    const classes = await page.$$eval("#events-table tbody tr", (rows) => rows.map((r) => r.className));
    assert.deepEqual(classes, ["denied", "denied", "denied"]);
    await page.fill("#f-reason", "not_found");
    await page.click("#filters button[type=submit]");
    await page.waitForFunction(() => document.querySelectorAll("#events-table tbody tr").length === 1);
    assert.equal(await page.getAttribute("#events-table tbody tr", "data-reason"), "not_found");

    // The token is kept for the tab: a reload does not ask again.
    await page.reload();
    await page.waitForSelector("body[data-loaded=true]", { timeout: 10000 });
    assert.equal(await page.isVisible("#login"), false);

    assert.deepEqual(errors, []);
    assert.deepEqual(apiWithoutToken, []);
    // Only the two allowed requests reached the upstream (no alert fired: threshold 50).
    assert.equal(upstream.requests.length, 2);
    assert.ok(upstream.requests.every((r) => r.url === "/hook"));
  } finally {
    await browser.close();
    await gw.stop();
    await upstream.close();
  }
});

test("a wrong token is refused and asked for again", async () => {
  const { upstream, gw, admin } = await setup();
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    await page.goto(`${admin}/`);
    await page.fill("#token", "not-the-token-at-all");
    await page.click("#login-form button[type=submit]");
    await page.waitForSelector("#login:not([hidden])");
    await page.waitForFunction(() => document.querySelector("#login-error").textContent !== "");
    assert.equal(await page.textContent("#login-error"), "The token was not accepted.");
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    assert.equal(await page.isVisible("#app"), false);
  } finally {
    await browser.close();
    await gw.stop();
    await upstream.close();
  }
});

test("a token in the URL fragment is taken and removed from the address bar", async () => {
  const { upstream, gw, admin } = await setup();
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    const errors = collectErrors(page);
    await page.goto(`${admin}/#token=${TOKEN}`);
    await page.waitForSelector("body[data-loaded=true]", { timeout: 10000 });
    assert.equal(new URL(page.url()).hash, "");
    assert.equal(await page.isVisible("#login"), false);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await gw.stop();
    await upstream.close();
  }
});
