// Vitest entry for the Durable Streams conformance suite. The documented
// `npx @durable-streams/server-conformance-tests --run <url>` finds no tests (its test file lives
// under node_modules, which vitest excludes), so the suite is run through its programmatic API
// from this file instead:
//
//   CONFORMANCE_BASE_URL=http://127.0.0.1:4437 [CONFORMANCE_TOKEN=...] \
//     ./node_modules/.bin/vitest run conformance.test.mjs
//
// CONFORMANCE_BASE_URL  origin the suite talks to; it appends /v1/stream/<name> itself.
// CONFORMANCE_TOKEN     optional: every request to that origin then carries
//                       `Authorization: Bearer <token>`, as a real client of the proxy would.
//                       The suite's HTTP all goes through the global `fetch`: its own raw calls
//                       and @durable-streams/client (which calls `fetch(...args)` at request
//                       time unless given a `fetch` option, which the suite never passes), so
//                       wrapping globalThis.fetch here covers every request.
// CONFORMANCE_LONG_POLL_TIMEOUT_MS  the server's long-poll timeout (default 3000).
import { runConformanceTests } from "@durable-streams/server-conformance-tests";

const baseUrl = process.env.CONFORMANCE_BASE_URL;
if (!baseUrl) throw new Error("CONFORMANCE_BASE_URL is not set");
const token = process.env.CONFORMANCE_TOKEN;
const longPollTimeoutMs = Number(process.env.CONFORMANCE_LONG_POLL_TIMEOUT_MS ?? 3000);

if (token) {
  const origin = new URL(baseUrl).origin;
  const originalFetch = globalThis.fetch;
  globalThis.fetch = (input, init) => {
    const url = input instanceof Request ? input.url : String(input);
    if (new URL(url).origin !== origin) return originalFetch(input, init);
    const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : {}));
    // A request that names its own credentials (the opt-in subscription tests' callback and
    // claim tokens) keeps them.
    if (!headers.has("authorization")) headers.set("authorization", `Bearer ${token}`);
    return originalFetch(input, { ...init, headers });
  };
}

runConformanceTests({ baseUrl, longPollTimeoutMs });
