// A Node shape proxy written the way Electric's docs show it (auth.md's proxy pattern, the
// proxy-auth example's route handler, and the tanstack example's plain `http` server):
//   check the Authorization header, copy only ELECTRIC_PROTOCOL_QUERY_PARAMS, set the shape
//   (table, columns, `where` with `$1` bound to the user's org) and the secret server-side,
//   `fetch` the origin, delete content-encoding/content-length, set `Vary: Authorization`,
//   and stream the body back with Readable.fromWeb(...).pipe(res).
// Only Node built-ins are used (global fetch is undici, keep-alive pooled, no connection cap).
//
// usage: node node_proxy.mjs PORT UPSTREAM_URL TOKEN SECRET [BACKLOG]
import http from "node:http";
import { Readable, pipeline } from "node:stream";

const [port, upstream, token, secret, backlog = "128"] = process.argv.slice(2);

// @electric-sql/client's exported ELECTRIC_PROTOCOL_QUERY_PARAMS.
const ELECTRIC_PROTOCOL_QUERY_PARAMS = [
  "live", "live_sse", "experimental_live_sse", "handle", "offset", "cursor", "expired_handle",
  "log", "subset__where", "subset__limit", "subset__offset", "subset__order_by",
  "subset__params", "subset__where_expr", "subset__order_by_expr", "cache-buster",
];

// The docs' demo looks the user up from the token; one static user here, like the others.
const users = new Map([[`Bearer ${token}`, { id: "bench-user", orgId: "acme" }]]);

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://localhost");
  if (url.pathname !== "/v1/shape") {
    res.writeHead(404).end();
    return;
  }
  const user = users.get(req.headers.authorization ?? "");
  if (!user) {
    res.writeHead(401, { "content-type": "text/plain" }).end("Unauthorized");
    return;
  }
  const originUrl = new URL(upstream);
  url.searchParams.forEach((value, key) => {
    if (ELECTRIC_PROTOCOL_QUERY_PARAMS.includes(key)) originUrl.searchParams.set(key, value);
  });
  originUrl.searchParams.set("table", "todos");
  originUrl.searchParams.set("columns", "id,title,done,org_id");
  originUrl.searchParams.set("where", "org_id = $1");
  originUrl.searchParams.set("params[1]", user.orgId);
  originUrl.searchParams.set("secret", secret);
  let response;
  try {
    response = await fetch(originUrl);
  } catch {
    res.writeHead(502, { "content-type": "application/json" }).end('{"error":"upstream"}');
    return;
  }
  const headers = new Headers(response.headers);
  headers.delete("content-encoding");
  headers.delete("content-length");
  headers.set("vary", "Authorization");
  res.writeHead(response.status, response.statusText, Object.fromEntries(headers));
  if (!response.body) {
    res.end();
    return;
  }
  pipeline(Readable.fromWeb(response.body), res, (err) => {
    if (err && err.code !== "ERR_STREAM_PREMATURE_CLOSE") res.destroy(err);
  });
});
server.keepAliveTimeout = 120_000;
server.headersTimeout = 125_000;
server.requestTimeout = 0; // a held long-poll is not a slow client
server.listen(Number(port), "127.0.0.1", Number(backlog));
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
