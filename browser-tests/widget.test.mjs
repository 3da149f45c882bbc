// A chat widget in real headless Chromium: a page on an allowed origin chats through the
// gateway with /_hookwarden/client.js and shows the streamed reply; the same page on another
// origin is refused; a token captured from the page cannot be replayed; and the client
// recovers when its token was spent by someone else.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import {
  collectErrors,
  eventually,
  freePort,
  launchBrowser,
  servePages,
  startGateway,
  startUpstream,
} from "./lib/harness.mjs";

const ROUTE = "chat";

/** The widget page: loads the client from the gateway and exposes `send(message)`. */
function widgetPage(gateway) {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>widget</title><link rel="icon" href="data:,"></head>
<body>
<div id="reply"></div>
<div id="error"></div>
<script src="${gateway}/_hookwarden/client.js"></script>
<script>
  const connections = {};
  const connection = (route) =>
    (connections[route] ??= hookwarden.connect({ gateway: ${JSON.stringify(gateway)}, route }));
  const reply = document.getElementById("reply");
  const error = document.getElementById("error");
  // Resolves to {ok, events, times, code, status}; the reply is shown as it streams.
  window.send = async (message, route = ${JSON.stringify(ROUTE)}) => {
    const chat = connection(route);
    reply.textContent = "";
    error.textContent = "";
    const times = [];
    try {
      const { events } = await chat.stream({ message }, (ev) => {
        if (ev.data === "[DONE]") return;
        times.push(performance.now());
        reply.textContent += JSON.parse(ev.data).delta;
      });
      return { ok: true, events, times };
    } catch (e) {
      error.textContent = e.message;
      return { ok: false, code: e.code, status: e.status };
    }
  };
  // A plain JSON call: resolves to {status, json}.
  window.post = async (message, route) => {
    const res = await connection(route).post({ message });
    return { status: res.status, json: await res.json() };
  };
</script>
</body></html>`;
}

/** A POST from outside the browser, with exactly the headers given. */
function rawPost(url, headers, body) {
  return new Promise((resolve, reject) => {
    const r = http.request(url, { method: "POST", headers }, (res) => {
      let text = "";
      res.on("data", (d) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, text }));
    });
    r.on("error", reject);
    r.end(body);
  });
}

let upstream, gw, browser, allowed, foreign;

// Events cut mid-line and mid-character, with CRLF and CR line ends, a comment and a
// multi-line event: the client must reassemble them exactly.
const SPLIT_CHUNKS = [
  ": a comment\r\n",
  'data: {"delta":"Gr',
  '\u00fc',
  '\u00df "}\r',
  "\n\r\n",
  'event: message\ndata: {"delta":"aus "}\n\ndata: {"delta":',
  '"K\u00f6ln"}\r\rdata: [DONE]\n\n',
];

async function splitHandler(req, res) {
  if (!req.url.startsWith("/split")) return false;
  res.writeHead(200, { "content-type": "text/event-stream" });
  for (const chunk of SPLIT_CHUNKS) {
    const bytes = Buffer.from(chunk, "utf8");
    // Also split inside the UTF-8 encoding of multi-byte characters.
    const mid = Math.ceil(bytes.length / 2);
    res.write(bytes.subarray(0, mid));
    await new Promise((r) => setTimeout(r, 30));
    res.write(bytes.subarray(mid));
    await new Promise((r) => setTimeout(r, 30));
  }
  res.end();
  return true;
}

before(async () => {
  upstream = await startUpstream(splitHandler);
  const allowedPort = await freePort();
  gw = await startGateway(`
[server]
listen = "{listen}"
[storage]
path = ":memory:"

[[route]]
name = "${ROUTE}"
path = "/chat"
methods = ["POST"]
content_types = ["application/json"]
[route.browser]
allowed_origins = ["http://127.0.0.1:${allowedPort}"]
token = true
[route.upstream]
url = "${upstream.url}/sse"

[[route]]
name = "split"
path = "/split"
[route.browser]
allowed_origins = ["http://127.0.0.1:${allowedPort}"]
token = true
[route.upstream]
url = "${upstream.url}/split"

[[route]]
name = "echo"
path = "/echo"
content_types = ["application/json"]
[route.browser]
allowed_origins = ["http://127.0.0.1:${allowedPort}"]
token = true
[route.upstream]
url = "${upstream.url}/echo"
`);
  allowed = await servePages({ "/": widgetPage(gw.base) }, allowedPort);
  foreign = await servePages({ "/": widgetPage(gw.base) });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await gw?.stop();
  await allowed?.close();
  await foreign?.close();
  await upstream?.close();
});

/** Opens `origin`'s page and records what it sends to the gateway. */
async function openPage(origin) {
  const page = await browser.newPage();
  const errors = collectErrors(page);
  const sent = [];
  const received = [];
  const failed = [];
  page.on("requestfailed", (r) => {
    if (r.url().startsWith(gw.base)) failed.push({ url: r.url(), method: r.method() });
  });
  page.on("request", (r) => {
    if (r.url().startsWith(gw.base)) sent.push({ url: r.url(), method: r.method(), headers: r.headers() });
  });
  page.on("response", (r) => {
    if (r.url().startsWith(gw.base)) received.push({ url: r.url(), status: r.status(), headers: r.headers() });
  });
  await page.goto(`${origin}/`);
  return { page, errors, sent, received, failed };
}

const chatPosts = (list) => list.filter((r) => r.url === `${gw.base}/chat` && (r.method ?? "POST") === "POST");
const tokenRequests = (list) => list.filter((r) => r.url.includes("/_hookwarden/token"));

test("a page on an allowed origin chats through the gateway and shows the streamed reply", { timeout: 60000 }, async () => {
  const before = upstream.requests.length;
  const { page, errors, sent } = await openPage(allowed.origin);
  try {
    const first = await page.evaluate(() => window.send("hello"));
    assert.equal(first.ok, true, JSON.stringify(first));
    assert.equal(await page.textContent("#reply"), "Hello from the upstream.");
    // Four events 300 ms apart upstream: they must arrive spread out, not all at once.
    assert.equal(first.times.length, 4);
    const spread = first.times[3] - first.times[0];
    assert.ok(spread > 600, `events arrived within ${spread} ms: the reply was buffered`);

    const second = await page.evaluate(() => window.send("again"));
    assert.equal(second.ok, true, JSON.stringify(second));
    assert.equal(await page.textContent("#reply"), "Hello from the upstream.");

    // One token request for the session; each call carried its own token.
    assert.equal(tokenRequests(sent).length, 1);
    const posts = sent.filter((r) => r.url === `${gw.base}/chat` && r.method === "POST");
    assert.equal(posts.length, 2);
    const tokens = posts.map((p) => p.headers["x-hookwarden-token"]);
    assert.ok(tokens[0] && tokens[1] && tokens[0] !== tokens[1], "tokens were not rotated");

    const seen = upstream.requests.slice(before);
    assert.equal(seen.length, 2);
    assert.deepEqual(seen.map((r) => JSON.parse(r.body).message), ["hello", "again"]);
    for (const r of seen) {
      assert.equal(r.headers["x-hookwarden-token"], undefined, "the token was forwarded upstream");
      assert.equal(r.headers.origin, allowed.origin);
    }
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

test("the same page on another origin is refused and the upstream sees nothing", { timeout: 60000 }, async () => {
  const before = upstream.requests.length;
  const logBefore = gw.log().length;
  const { page, failed } = await openPage(foreign.origin);
  try {
    const result = await page.evaluate(() => window.send("hello from elsewhere"));
    assert.equal(result.ok, false);
    assert.equal(result.code, "network_error"); // CORS keeps the refusal from the page
    assert.match(await page.textContent("#error"), /origin is not allowed/);
    assert.equal(await page.textContent("#reply"), "");
    // The browser saw the token request fail; the gateway logged why.
    assert.equal(tokenRequests(failed).length, 1);

    // Page code that skips the client and posts directly is stopped at the preflight.
    const direct = await page.evaluate(async (gateway) => {
      try {
        await fetch(`${gateway}/chat`, {
          method: "POST",
          headers: { "content-type": "application/json", "x-hookwarden-token": "x" },
          body: "{}",
        });
        return "sent";
      } catch (e) {
        return "blocked";
      }
    }, gw.base);
    assert.equal(direct, "blocked");
    assert.ok(failed.some((r) => r.url === `${gw.base}/chat`));
    const log = await eventually(
      () => gw.log().slice(logBefore),
      (l) => (l.match(/origin_denied/g) ?? []).length >= 2
    );
    const denials = log.match(/origin_denied/g) ?? [];
    assert.equal(denials.length, 2, `expected the token request and the preflight refused:\n${log}`);
    assert.match(log, /OPTIONS/);
    assert.equal(upstream.requests.length, before, "a refused origin reached the upstream");
  } finally {
    await page.close();
  }
});

test("a token captured from the page cannot be replayed", { timeout: 60000 }, async () => {
  const { page, sent, received } = await openPage(allowed.origin);
  try {
    const ok = await page.evaluate(() => window.send("original"));
    assert.equal(ok.ok, true, JSON.stringify(ok));
    const count = upstream.requests.length;
    const logBefore = gw.log().length;
    const captured = chatPosts(sent).at(-1).headers["x-hookwarden-token"];
    assert.ok(captured);

    // Replayed by a script outside the browser, with the page's Origin forged.
    const replay = await rawPost(
      `${gw.base}/chat`,
      { origin: allowed.origin, "content-type": "application/json", "x-hookwarden-token": captured },
      JSON.stringify({ message: "replayed" })
    );
    assert.equal(replay.status, 403);
    assert.equal(JSON.parse(replay.text).error, "forbidden");
    assert.equal(replay.headers["x-hookwarden-token"], undefined, "a replay earned a new token");

    // Replayed from inside the page itself.
    const inPage = await page.evaluate(
      async ([gateway, token]) => {
        const r = await fetch(`${gateway}/chat`, {
          method: "POST",
          headers: { "content-type": "application/json", "x-hookwarden-token": token },
          body: JSON.stringify({ message: "replayed in page" }),
        });
        return { status: r.status, body: await r.json(), next: r.headers.get("x-hookwarden-token") };
      },
      [gw.base, captured]
    );
    assert.equal(inPage.status, 403);
    assert.equal(inPage.body.error, "forbidden");
    assert.equal(inPage.next, null);
    assert.equal(upstream.requests.length, count, "a replayed token reached the upstream");
    const replayLog = await eventually(
      () => gw.log().slice(logBefore),
      (l) => (l.match(/token_reused/g) ?? []).length >= 2
    );
    const reused = replayLog.match(/token_reused/g) ?? [];
    assert.equal(reused.length, 2, gw.log().slice(logBefore));
    assert.ok(received.length > 0);
  } finally {
    await page.close();
  }
});

test("the client starts a new session once when its token was spent elsewhere", { timeout: 60000 }, async () => {
  const { page, sent, received } = await openPage(allowed.origin);
  try {
    assert.equal((await page.evaluate(() => window.send("one"))).ok, true);
    // The rotated token the client now holds, taken off the wire and spent by someone else.
    const held = chatPosts(received).at(-1).headers["x-hookwarden-token"];
    assert.ok(held);
    const stolen = await rawPost(
      `${gw.base}/chat`,
      { origin: allowed.origin, "content-type": "application/json", "x-hookwarden-token": held },
      JSON.stringify({ message: "stolen" })
    );
    assert.equal(stolen.status, 200);
    const count = upstream.requests.length;

    const two = await page.evaluate(() => window.send("two"));
    assert.equal(two.ok, true, JSON.stringify(two));
    assert.equal(await page.textContent("#reply"), "Hello from the upstream.");
    assert.equal(tokenRequests(sent).length, 2, "the client did not fetch a new token");
    const statuses = chatPosts(received).map((r) => r.status);
    assert.deepEqual(statuses, [200, 403, 200]);
    assert.equal(upstream.requests.length, count + 1);
    assert.equal(JSON.parse(upstream.requests.at(-1).body).message, "two");
  } finally {
    await page.close();
  }
});

test("the client reassembles Server-Sent Events cut anywhere", { timeout: 60000 }, async () => {
  const { page, errors } = await openPage(allowed.origin);
  try {
    const result = await page.evaluate(() => window.send("split", "split"));
    assert.equal(result.ok, true, JSON.stringify(result));
    assert.equal(result.events, 4); // three deltas and [DONE]; the comment is not an event
    assert.equal(await page.textContent("#reply"), "Grüß aus Köln");
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

test("post() sends JSON, and concurrent calls share one session", { timeout: 60000 }, async () => {
  const { page, sent } = await openPage(allowed.origin);
  try {
    const before = upstream.requests.length;
    const results = await page.evaluate(() =>
      Promise.all([window.post("a", "echo"), window.post("b", "echo"), window.post("c", "echo")])
    );
    assert.deepEqual(
      results.map((r) => [r.status, JSON.parse(r.json.echo).message]),
      [[200, "a"], [200, "b"], [200, "c"]]
    );
    // One token request: the three calls waited for each other's rotated token.
    assert.equal(tokenRequests(sent).length, 1);
    const seen = upstream.requests.slice(before);
    assert.equal(seen.length, 3);
    for (const r of seen) assert.equal(r.headers["content-type"], "application/json");
  } finally {
    await page.close();
  }
});

test("a page can pin client.js with Subresource Integrity", { timeout: 60000 }, async () => {
  const { createHash } = await import("node:crypto");
  const res = await fetch(`${gw.base}/_hookwarden/client.js`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("access-control-allow-origin"), "*");
  const body = Buffer.from(await res.arrayBuffer());
  const good = `sha384-${createHash("sha384").update(body).digest("base64")}`;
  const bad = `sha384-${createHash("sha384").update("something else").digest("base64")}`;
  const pinned = (hash) => `<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>
<script src="${gw.base}/_hookwarden/client.js" integrity="${hash}" crossorigin="anonymous"></script>
<script>window.loaded = typeof hookwarden === "object";</script></body></html>`;
  const pages = await servePages({ "/good": pinned(good), "/bad": pinned(bad) });
  const page = await browser.newPage();
  try {
    await page.goto(`${pages.origin}/good`);
    assert.equal(await page.evaluate(() => window.loaded), true, "the pinned client did not load");
    // A hash that does not match: the browser refuses the script, so SRI is really checked.
    await page.goto(`${pages.origin}/bad`);
    assert.equal(await page.evaluate(() => window.loaded), false);
  } finally {
    await page.close();
    await pages.close();
  }
});
