// Shared harness for the browser tests: a real hookwarden binary, a real recording upstream,
// pages served from chosen origins, and Debian's headless Chromium driven by playwright-core.

import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const HOOKWARDEN_BIN =
  process.env.HOOKWARDEN_BIN ?? new URL("../../target/debug/hookwarden", import.meta.url).pathname;
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

/**
 * A recording upstream. Every request is kept in `requests` ({method, url, headers, body}).
 * `/sse` streams three events 300 ms apart; anything else answers 200 JSON.
 * `handler(req, res, body)` may answer instead (return true when it did).
 */
export async function startUpstream(handler) {
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const body = Buffer.concat(chunks).toString("utf8");
      requests.push({ method: req.method, url: req.url, headers: req.headers, body });
      if (handler && (await handler(req, res, body))) return;
      if (req.url.startsWith("/sse")) {
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
        for (const word of ["Hello ", "from ", "the ", "upstream."]) {
          res.write(`data: ${JSON.stringify({ delta: word })}\n\n`);
          await new Promise((r) => setTimeout(r, 300));
        }
        res.end("data: [DONE]\n\n");
        return;
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ ok: true, echo: body }));
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise((r) => server.close(r)),
  };
}

/** Serves `pages` ({"/path": html}) on 127.0.0.1:`port` (or a free port). */
export async function servePages(pages, port) {
  port = port ?? (await freePort());
  const server = http.createServer((req, res) => {
    const page = pages[new URL(req.url, "http://x").pathname];
    if (page === undefined) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(page);
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise((r) => server.close(r)),
  };
}

/**
 * Starts the hookwarden binary with `config` (TOML text; `{listen}` is replaced by a free
 * local address). Resolves once /_hookwarden/healthz answers. `env` adds variables.
 */
export async function startGateway(config, env = {}) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "hookwarden-"));
  const path = join(dir, "hookwarden.toml");
  writeFileSync(path, config.replaceAll("{listen}", `127.0.0.1:${port}`));
  const proc = spawn(HOOKWARDEN_BIN, ["serve", "--config", path], {
    env: { ...process.env, RUST_LOG: "warn", ...env },
    stdio: ["ignore", "inherit", "pipe"],
  });
  let log = "";
  proc.stderr.on("data", (d) => (log += d));
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) throw new Error(`hookwarden exited: ${log}`);
    try {
      const r = await fetch(`${base}/_hookwarden/healthz`);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    base,
    port,
    dir,
    log: () => log,
    stop: () =>
      new Promise((resolve) => {
        if (proc.exitCode !== null) return resolve();
        proc.on("exit", resolve);
        proc.kill("SIGTERM");
      }),
  };
}

/** Launches headless Chromium the way this machine allows (no sandbox as root, no network noise). */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** Collects console errors and page errors of `page` into an array. */
export function collectErrors(page) {
  const errors = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  return errors;
}

/**
 * Polls `read()` every 50 ms until `done(value)` is true or `ms` pass; returns the last value.
 * The gateway buffers its log and flushes it every 100 ms, so log assertions wait with this.
 */
export async function eventually(read, done, ms = 3000) {
  const deadline = Date.now() + ms;
  let value = read();
  while (!done(value) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    value = read();
  }
  return value;
}
