// Headless Chromium on a page of one origin that calls `fetch` on another origin from page
// script, as a browser app does: the preflights, credentials and exposed headers are the
// browser's own business, so this shows what an app on that origin can and cannot do.
//
// Driven by tests/e2e/test_browser_streams.py (the JSON-lines protocol of protocol.mjs):
//   stdout events: "loaded", "fetched", "done", "failed" (then exit 1)
//   stdin commands:
//     {"cmd": "fetch", "url": u, "method": m, "headers": {...}, "body": text|null,
//      "read": [header names]}   one fetch with credentials: "include"; the event carries
//                                 status, body text and the named headers as script reads
//                                 them, or the error fetch threw (a CORS refusal: TypeError)
//     {"cmd": "finish"}           "done" with every request, raw response and console line
//
// No request interception (page.route): with it on, Playwright answers CORS preflights itself.

import { launchChromium } from './chromium.mjs'
import { commandQueue, emit, requireEnv } from './protocol.mjs'

const PAGE_URL = requireEnv('E2E_PAGE_URL')
const STEP_TIMEOUT_MS = Number(process.env.E2E_STEP_TIMEOUT_MS ?? '10000')

const consoleMessages = []
const requests = []
const responses = []
const browser = await launchChromium()

async function fail(reason, data = {}) {
  emit('failed', { reason, ...data, console: consoleMessages, requests, responses })
  try {
    await browser.close()
  } catch {
    // exiting anyway
  }
  process.exit(1)
}

process.on('unhandledRejection', (error) => fail('unhandled rejection', { message: String(error) }))

const page = await (await browser.newContext()).newPage()
page.on('console', (message) => consoleMessages.push({ type: message.type(), text: message.text() }))
page.on('pageerror', (error) => fail('uncaught error in the page', { message: String(error) }))
page.on('request', (request) => {
  requests.push({ method: request.method(), url: request.url() })
})
const recording = [] // response handlers still reading headers; "done" waits for them
page.on('response', (response) => recording.push(record(response)))

async function record(response) {
  const request = response.request()
  // The raw response headers, unfiltered by CORS: what the proxy sent, preflights included.
  const headers = await response.allHeaders().catch(() => ({}))
  responses.push({
    method: request.method(),
    url: response.url(),
    status: response.status(),
    allowOrigin: headers['access-control-allow-origin'] ?? null,
    allowMethods: headers['access-control-allow-methods'] ?? null,
    allowCredentials: headers['access-control-allow-credentials'] ?? null,
  })
}

async function pageFetch(command) {
  const seen = await page.evaluate(async ({ url, method, headers, body, read }) => {
    try {
      const response = await fetch(url, { method, headers, body, credentials: 'include' })
      return {
        ok: true,
        status: response.status,
        body: await response.text(),
        headers: Object.fromEntries(read.map((name) => [name, response.headers.get(name)])),
      }
    } catch (error) {
      return { ok: false, error: `${error.name}: ${error.message}` }
    }
  }, command)
  emit('fetched', { method: command.method, url: command.url, ...seen })
}

const loaded = await page.goto(PAGE_URL, { waitUntil: 'load', timeout: STEP_TIMEOUT_MS })
emit('loaded', { status: loaded?.status() ?? null, url: page.url() })

const nextCommand = commandQueue()
for (;;) {
  const command = await nextCommand()
  switch (command.cmd) {
    case 'fetch':
      await pageFetch({ headers: {}, body: null, read: [], ...command })
      break
    case 'finish':
      await Promise.all(recording)
      emit('done', { requests, responses, console: consoleMessages })
      await browser.close()
      process.exit(0)
      break
    case 'exit':
      await browser.close()
      process.exit(2)
      break
    default:
      await fail(`unknown command ${JSON.stringify(command)}`)
  }
}
