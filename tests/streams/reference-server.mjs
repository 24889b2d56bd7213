// Starts the Durable Streams reference server (@durable-streams/server) on 127.0.0.1, on a free
// port, in memory, and prints one JSON line on stdout: {"url": "http://127.0.0.1:<port>"}.
// Runs until SIGTERM/SIGINT or until stdin closes (so it never outlives the process that
// started it). Used by test_conformance.py.
//
// SERVICE_PREFIX + SERVICE_SECRET (optional, both or neither) imitate an Electric Cloud streams
// service: requests under SERVICE_PREFIX (e.g. /v1/stream/svc-test/) are refused with 401
// unless they carry exactly `Authorization: Bearer <SERVICE_SECRET>` (CORS preflights, which
// browsers send without credentials, excepted). Other paths stay open.
import { DurableStreamTestServer } from "@durable-streams/server";

const server = new DurableStreamTestServer({
  host: "127.0.0.1",
  port: 0,
  longPollTimeout: Number(process.env.LONG_POLL_TIMEOUT_MS ?? 3000),
});

const prefix = process.env.SERVICE_PREFIX;
const secret = process.env.SERVICE_SECRET;
if (Boolean(prefix) !== Boolean(secret)) {
  throw new Error("SERVICE_PREFIX and SERVICE_SECRET go together");
}
if (prefix) {
  // The node:http server calls this.handleRequest(req, res) per request.
  const handle = server.handleRequest.bind(server);
  server.handleRequest = async (req, res) => {
    const guarded = req.url.startsWith(prefix) && req.method !== "OPTIONS"; // CORS preflights
    if (guarded && req.headers.authorization !== `Bearer ${secret}`) {
      res.writeHead(401, { "content-type": "text/plain", "www-authenticate": "Bearer" });
      res.end("service secret missing or wrong");
      return;
    }
    return handle(req, res);
  };
}

const url = await server.start();
process.stdout.write(`${JSON.stringify({ url })}\n`);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  // stop() waits for open connections (long-polls, SSE); do not let it hang the exit.
  setTimeout(() => process.exit(0), 2000).unref();
  try {
    await server.stop();
  } finally {
    process.exit(0);
  }
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
process.stdin.on("end", stop);
process.stdin.on("error", stop);
process.stdin.resume();
