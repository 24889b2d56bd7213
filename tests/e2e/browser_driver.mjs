// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) on the example
// page examples/browser/, which syncs through electric-proxy from another origin.
//
// Driven by tests/e2e/test_browser.py with the same JSON-lines protocol as node_client.mjs:
//   stdout events: "loaded", "reached", "probed", "screenshot", "done", "failed" (then exit 1)
//   stdin commands:
//     {"cmd": "wait", "step": s, "rows": {id: row}}  until the page lists exactly these rows
//     {"cmd": "probe", "url": u, "token": t}        what page script can read of a response
//     {"cmd": "screenshot", "path": p}
//     {"cmd": "finish"}
//
// The run fails by itself when the page shows its error state, throws, logs a console error
// (a CORS refusal shows up there), or ever renders a row of another tenant: an observer
// installed before the page's own script records every list item ever added or changed.
//
// No request interception (page.route) on purpose: with interception on, Playwright answers
// CORS preflights itself, so the proxy's preflight handling would go untested. The network
// is kept local by Chromium's host resolver instead, and every request is reported.

import { launchChromium } from './chromium.mjs'
import { commandQueue, emit, requireEnv } from './protocol.mjs'

const PAGE_URL = requireEnv('E2E_PAGE_URL')
const TENANT = requireEnv('E2E_TENANT')
const STEP_TIMEOUT_MS = Number(process.env.E2E_STEP_TIMEOUT_MS ?? '10000')

const consoleMessages = []
const requests = []
const responses = []
let browser = null
let page = null
let failing = false

async function fail(reason, data = {}) {
  if (failing) return new Promise(() => {}) // the first failure reports and exits
  failing = true
  let state = null
  try {
    state = page ? await pageState() : null
  } catch {
    // the page may be gone
  }
  emit('failed', { reason, ...data, page: state, console: consoleMessages, requests })
  try {
    await browser?.close()
  } catch {
    // exiting anyway
  }
  process.exit(1)
}

process.on('unhandledRejection', (error) => fail('unhandled rejection', { message: String(error) }))

browser = await launchChromium()
const context = await browser.newContext({ viewport: { width: 800, height: 640 } })
page = await context.newPage()

await page.addInitScript((tenant) => {
  // Runs before the page's scripts: records every row element ever rendered for another
  // tenant, even one removed again before anybody looked.
  window.__e2eForeign = []
  const check = (node) => {
    if (node.nodeType !== Node.ELEMENT_NODE) return
    for (const el of [node, ...node.querySelectorAll('[data-org]')]) {
      if (el.dataset && el.dataset.org !== undefined && el.dataset.org !== tenant) {
        window.__e2eForeign.push({ org: el.dataset.org, id: el.dataset.id, text: el.textContent })
      }
    }
  }
  new MutationObserver((records) => {
    for (const record of records) {
      if (record.type === 'attributes') check(record.target)
      record.addedNodes.forEach(check)
    }
  }).observe(document, {
    subtree: true,
    childList: true,
    attributes: true,
    attributeFilter: ['data-org'],
  })
}, TENANT)

page.on('console', (message) => {
  consoleMessages.push({ type: message.type(), text: message.text() })
  if (message.type() === 'error') fail('console error in the page', { message: message.text() })
})
page.on('pageerror', (error) => fail('uncaught error in the page', { message: String(error) }))
page.on('request', (request) => {
  requests.push({ method: request.method(), url: request.url() })
})
page.on('response', async (response) => {
  const request = response.request()
  // Playwright reports the raw response headers (not filtered by CORS).
  const headers = await response.allHeaders().catch(() => ({}))
  responses.push({
    method: request.method(),
    url: response.url(),
    status: response.status(),
    contentEncoding: headers['content-encoding'] ?? null,
    allowOrigin: headers['access-control-allow-origin'] ?? null,
    allowCredentials: headers['access-control-allow-credentials'] ?? null,
    exposeHeaders: headers['access-control-expose-headers'] ?? null,
  })
})

async function pageState() {
  return page.evaluate(() => ({
    status: document.getElementById('status')?.dataset.state ?? null,
    statusText: document.getElementById('status')?.textContent ?? null,
    rows: [...document.querySelectorAll('#todos li')].map((li) => ({
      id: Number(li.dataset.id),
      org_id: li.dataset.org,
      title: li.querySelector('.title')?.textContent ?? null,
      done: li.dataset.done === 'true',
    })),
    foreign: window.__e2eForeign ?? [],
  }))
}

async function checkedState() {
  const state = await pageState()
  if (state.foreign.length > 0) {
    await fail('the page rendered a row of another tenant', { foreign: state.foreign })
  }
  if (state.status === 'error') await fail('the page shows an error', { status: state.statusText })
  return state
}

function sameRows(actual, expected) {
  const have = Object.fromEntries(actual.map((row) => [String(row.id), row]))
  const wantIds = Object.keys(expected).sort()
  if (JSON.stringify(wantIds) !== JSON.stringify(Object.keys(have).sort())) return false
  return wantIds.every((id) =>
    Object.entries(expected[id]).every(
      ([column, value]) => JSON.stringify(have[id][column]) === JSON.stringify(value)
    )
  )
}

async function waitFor(command) {
  const deadline = Date.now() + STEP_TIMEOUT_MS
  for (;;) {
    const state = await checkedState()
    if (state.status === 'live' && sameRows(state.rows, command.rows)) {
      emit('reached', { step: command.step, rows: state.rows })
      return
    }
    if (Date.now() > deadline) {
      await fail(`step ${command.step}: rows not shown within ${STEP_TIMEOUT_MS} ms`, {
        expected: command.rows,
      })
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

async function probe(command) {
  // A cross-origin fetch from page script, as the client makes it: what can script read?
  const seen = await page.evaluate(
    async ({ url, token }) => {
      const response = await fetch(`${url}?table=todos&offset=-1`, {
        headers: { Authorization: `Bearer ${token}` },
        credentials: 'include',
      })
      const body = await response.json()
      const read = (name) => response.headers.get(name)
      return {
        status: response.status,
        headers: {
          'electric-handle': read('electric-handle'),
          'electric-offset': read('electric-offset'),
          'electric-schema': read('electric-schema'),
          'electric-server': read('electric-server'),
        },
        orgs: [...new Set(body.filter((m) => m.value).map((m) => m.value.org_id))],
        messages: body.length,
      }
    },
    { url: command.url, token: command.token }
  )
  emit('probed', seen)
}

// -- main ------------------------------------------------------------------------------------

const nextCommand = commandQueue()

const loaded = await page.goto(PAGE_URL, { waitUntil: 'load', timeout: STEP_TIMEOUT_MS })
emit('loaded', { status: loaded?.status() ?? null, url: page.url() })

for (;;) {
  const command = await nextCommand()
  switch (command.cmd) {
    case 'wait':
      await waitFor(command)
      break
    case 'probe':
      await probe(command)
      break
    case 'screenshot':
      await checkedState()
      await page.screenshot({ path: command.path, fullPage: true })
      emit('screenshot', { path: command.path })
      break
    case 'finish': {
      const state = await checkedState()
      emit('done', { state, requests, responses, console: consoleMessages })
      await browser.close()
      process.exit(0)
      break
    }
    case 'exit':
      await browser.close()
      process.exit(2)
      break
    default:
      await fail(`unknown command ${JSON.stringify(command)}`)
  }
}
