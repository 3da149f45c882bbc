// `hookwarden demo` in real headless Chromium: the demo chat page, served on its own port,
// chats through the gateway to the built-in streaming upstream.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { HOOKWARDEN_BIN, collectErrors, freePort, launchBrowser } from "./lib/harness.mjs";

async function startDemo() {
  const gwPort = await freePort();
  const pagePort = await freePort();
  const proc = spawn(
    HOOKWARDEN_BIN,
    ["demo", "--listen", `127.0.0.1:${gwPort}`, "--page-listen", `127.0.0.1:${pagePort}`],
    { env: { ...process.env, RUST_LOG: "warn" }, stdio: ["ignore", "pipe", "pipe"] }
  );
  let out = "";
  proc.stdout.on("data", (d) => (out += d));
  proc.stderr.on("data", (d) => (out += d));
  const base = `http://127.0.0.1:${gwPort}`;
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) throw new Error(`demo exited: ${out}`);
    try {
      if ((await fetch(`${base}/_hookwarden/healthz`)).ok) break;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    base,
    page: `http://127.0.0.1:${pagePort}/`,
    output: () => out,
    stop: () =>
      new Promise((resolve) => {
        if (proc.exitCode !== null) return resolve();
        proc.on("exit", resolve);
        proc.kill("SIGTERM");
      }),
  };
}

test("the demo chat page streams a reply through the gateway", { timeout: 60000 }, async () => {
  const demo = await startDemo();
  const browser = await launchBrowser();
  try {
    assert.match(demo.output(), new RegExp(`chat page: ${demo.page}`));
    const page = await browser.newPage();
    const errors = collectErrors(page);
    await page.goto(demo.page);
    await page.fill("#message", "Hello gateway");
    await page.click("#send");
    // The reply grows word by word before it is done.
    await page.waitForFunction(() => (document.querySelector(".bot")?.textContent ?? "").length > 0);
    const partial = await page.textContent(".bot");
    assert.equal(await page.getAttribute(".bot", "data-state"), "streaming", `finished at once: ${partial}`);
    await page.waitForSelector('.bot[data-state="done"]', { timeout: 20000 });
    const reply = await page.textContent(".bot");
    assert.match(reply, /^You said "Hello gateway"\. This answer comes from the upstream/);
    assert.ok(reply.startsWith(partial));
    assert.match(await page.textContent("#status"), /1 call in this session/);

    // A second message in the same session.
    await page.fill("#message", "Once more");
    await page.click("#send");
    await page.waitForSelector('.bot:nth-of-type(4)[data-state="done"]', { timeout: 20000 });
    assert.match(await page.textContent(".bot:nth-of-type(4)"), /^You said "Once more"/);
    assert.match(await page.textContent("#status"), /2 calls in this session/);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await demo.stop();
  }
});
