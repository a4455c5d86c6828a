// The peers' design for notes/fanout.md: Node's http module, one event loop, a Set of open SSE
// responses and one res.write() of the same string to each per tick. It speaks just enough of
// the contract for `c10k load --kind sse` and the probe: `GET /` and `GET /sse`, ticks with
// the contract's JSON (seq, event, sent_ns in Unix nanoseconds).
//
//   node scripts/peers/node-fanout.js PORT TICK_MS
"use strict";
const http = require("http");
const { performance } = require("perf_hooks");

const port = Number(process.argv[2] || 0);
const tickMs = Number(process.argv[3] || 500);
const subscribers = new Set();
let seq = 0;

const nowNs = () => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;

const server = http.createServer((req, res) => {
  if (req.url === "/sse" || req.url.startsWith("/sse?")) {
    res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
    res.flushHeaders();
    subscribers.add(res);
    req.socket.setNoDelay(true);
    res.on("close", () => subscribers.delete(res));
  } else {
    res.writeHead(200, { "Content-Type": "text/plain", "Content-Length": 3 });
    res.end("ok\n");
  }
});
server.keepAliveTimeout = 60000;
server.headersTimeout = 10000;
server.requestTimeout = 0;

// Ticks on the wall clock, like the project's servers.
function tick() {
  seq += 1;
  const event = `id: ${seq}\nevent: tick\ndata: {"seq":${seq},"event":"tick","sent_ns":${nowNs()}}\n\n`;
  for (const res of subscribers) res.write(event);
  setTimeout(tick, tickMs - (Date.now() % tickMs));
}
server.listen(port, "127.0.0.1", 4096, () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
  setTimeout(tick, tickMs - (Date.now() % tickMs));
});
process.on("SIGTERM", () => process.exit(0));
