/*! hookwarden browser client, served by the gateway at /_hookwarden/client.js. No dependencies.
 *
 *   <script src="https://gateway.example.com/_hookwarden/client.js"></script>
 *   <script>
 *     const chat = hookwarden.connect({ route: "chat" });   // gateway: where this script came from
 *     const res = await chat.post({ message: "hi" });       // a fetch Response
 *     await chat.stream({ message: "hi" }, (ev) => console.log(ev.data));   // Server-Sent Events
 *   </script>
 *
 * Every call spends a single-use token: the first comes from /_hookwarden/token, each response
 * carries the next one (X-Hookwarden-Token), which the client keeps. Calls on one connection are
 * sent one after the other (each waits for the previous response's headers, not its body), so
 * they all belong to one session. When the gateway refuses a token (expired, already used, a
 * new gateway secret) the client fetches a new one and retries once.
 */
(function (root) {
  "use strict";

  var script = typeof document !== "undefined" ? document.currentScript : null;
  var scriptOrigin = null;
  try {
    scriptOrigin = script && script.src ? new URL(script.src).origin : null;
  } catch (e) {
    scriptOrigin = null;
  }

  // Renew a little before the gateway would consider a token expired.
  var EXPIRY_MARGIN_MS = 5000;

  /** A refusal or failure: `status` (0 = network or CORS), `code` ("forbidden", …), `requestId`. */
  class HookwardenError extends Error {
    constructor(message, status, code, requestId) {
      super(message);
      this.name = "HookwardenError";
      this.status = status;
      this.code = code;
      this.requestId = requestId;
    }
  }

  async function errorFrom(res, what) {
    var code = null;
    var requestId = res.headers.get("X-Request-Id");
    try {
      var j = await res.json();
      code = j.error || j.status || null;
      requestId = j.request_id || requestId;
    } catch (e) {
      // not JSON: keep the status alone
    }
    return new HookwardenError(
      what + ": " + res.status + (code ? " " + code : ""),
      res.status,
      code,
      requestId
    );
  }

  function isPlainData(body) {
    if (body === null || typeof body !== "object") return false;
    var passThrough = [
      typeof Blob !== "undefined" && Blob,
      typeof FormData !== "undefined" && FormData,
      typeof URLSearchParams !== "undefined" && URLSearchParams,
      typeof ArrayBuffer !== "undefined" && ArrayBuffer,
      typeof ReadableStream !== "undefined" && ReadableStream,
    ];
    for (var i = 0; i < passThrough.length; i++) {
      if (passThrough[i] && body instanceof passThrough[i]) return false;
    }
    return !ArrayBuffer.isView(body);
  }

  /** Splits a Server-Sent Events stream into events (WHATWG HTML §9.2.6). */
  function sseParser(onEvent) {
    var buffer = "";
    var data = [];
    var type = "";
    var id = null;
    var count = 0;
    function line(l) {
      if (l === "") {
        if (data.length > 0) {
          count++;
          onEvent({ event: type || "message", data: data.join("\n"), id: id });
        }
        data = [];
        type = "";
        return;
      }
      if (l[0] === ":") return;
      var colon = l.indexOf(":");
      var field = colon < 0 ? l : l.slice(0, colon);
      var value = colon < 0 ? "" : l.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") type = value;
      else if (field === "id" && value.indexOf("\0") < 0) id = value;
    }
    return {
      push: function (text) {
        buffer += text;
        var m;
        var re = /\r\n|\r(?!$)|\n/g;
        var start = 0;
        while ((m = re.exec(buffer)) !== null) {
          line(buffer.slice(start, m.index));
          start = m.index + m[0].length;
        }
        buffer = buffer.slice(start);
      },
      end: function () {
        if (buffer.endsWith("\r")) buffer = buffer.slice(0, -1);
        // A final event without its blank line is dropped, as EventSource does.
        buffer = "";
        return count;
      },
    };
  }

  /**
   * Opens a connection to one route.
   *   gateway: the gateway's origin (default: where this script was loaded from)
   *   route:   the route's name in the gateway config (required)
   *   path:    the route's path (default: as the token endpoint reports it)
   */
  function connect(options) {
    options = options || {};
    var gateway = String(options.gateway || scriptOrigin || "").replace(/\/+$/, "");
    if (!gateway) throw new TypeError("hookwarden.connect: set `gateway`, e.g. \"https://gateway.example.com\"");
    var route = options.route;
    if (!route) throw new TypeError("hookwarden.connect: set `route` to the route's name");
    var path = options.path || null;
    var token = null;
    var expiresAt = 0;
    var ttlMs = 0;
    var lock = Promise.resolve();

    function exclusive(fn) {
      var run = lock.then(fn, fn);
      lock = run.then(
        function () {},
        function () {}
      );
      return run;
    }

    async function newSession() {
      var url = gateway + "/_hookwarden/token?route=" + encodeURIComponent(route);
      var res;
      try {
        res = await fetch(url, { method: "GET", mode: "cors", credentials: "omit", cache: "no-store" });
      } catch (e) {
        throw new HookwardenError(
          "cannot get a token from " + gateway + " (unreachable, or this page's origin is not allowed)",
          0,
          "network_error",
          null
        );
      }
      if (!res.ok) throw await errorFrom(res, "token request refused");
      var j = await res.json();
      token = j.token;
      ttlMs = j.expires_in * 1000;
      expiresAt = Date.now() + ttlMs - EXPIRY_MARGIN_MS;
      if (!path) path = j.path;
    }

    async function send(body, init) {
      init = Object.assign({}, init || {});
      var headers = new Headers(init.headers || {});
      var payload = body;
      if (isPlainData(body)) {
        payload = JSON.stringify(body);
        if (!headers.has("Content-Type")) headers.set("Content-Type", "application/json");
      }
      for (var attempt = 0; ; attempt++) {
        if (!token || Date.now() >= expiresAt) await newSession();
        headers.set("X-Hookwarden-Token", token);
        token = null; // spent, whatever happens next
        var res;
        try {
          res = await fetch(
            gateway + path,
            Object.assign({}, init, {
              method: init.method || "POST",
              headers: headers,
              body: payload,
              mode: "cors",
              credentials: "omit",
            })
          );
        } catch (e) {
          if (e && e.name === "AbortError") throw e;
          throw new HookwardenError("cannot reach " + gateway + path, 0, "network_error", null);
        }
        var next = res.headers.get("X-Hookwarden-Token");
        if (next) {
          token = next;
          expiresAt = Date.now() + ttlMs - EXPIRY_MARGIN_MS;
        } else if (res.status === 403 && attempt === 0) {
          // Refused before the token was spent (expired, already used, or a gateway with a
          // new secret): the request never reached the upstream, so a retry is safe.
          continue;
        }
        return res;
      }
    }

    return {
      /** POSTs `body` (objects are sent as JSON) with a fresh token; resolves to the Response. */
      post: function (body, init) {
        return exclusive(function () {
          return send(body, init);
        });
      },

      /**
       * POSTs `body` and calls `onEvent({event, data, id})` for each Server-Sent Event of the
       * reply as it arrives. Resolves to {status, events} when the stream ends; rejects with a
       * HookwardenError when the gateway refuses. A reply that is not an event stream is
       * delivered as one event holding the whole body.
       */
      stream: async function (body, onEvent, init) {
        init = Object.assign({}, init || {});
        var headers = new Headers(init.headers || {});
        if (!headers.has("Accept")) headers.set("Accept", "text/event-stream");
        init.headers = headers;
        var res = await exclusive(function () {
          return send(body, init);
        });
        if (!res.ok) throw await errorFrom(res, "request refused");
        var type = res.headers.get("Content-Type") || "";
        if (type.indexOf("text/event-stream") !== 0 || !res.body) {
          onEvent({ event: "message", data: await res.text(), id: null });
          return { status: res.status, events: 1 };
        }
        var parser = sseParser(onEvent);
        var reader = res.body.getReader();
        var decoder = new TextDecoder();
        for (;;) {
          var chunk = await reader.read();
          if (chunk.done) break;
          parser.push(decoder.decode(chunk.value, { stream: true }));
        }
        parser.push(decoder.decode());
        return { status: res.status, events: parser.end() };
      },

      /** Forgets the current token: the next call starts a new session. */
      reset: function () {
        token = null;
      },
    };
  }

  root.hookwarden = { connect: connect, HookwardenError: HookwardenError, version: "1" };
})(typeof globalThis !== "undefined" ? globalThis : this);
