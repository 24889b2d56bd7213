// The real @electric-sql/client, in Node, while the proxy revokes its user's access mid-sync.
//
// Driven by tests/e2e/test_node_revocation.py, which interrupts the user's held requests
// (Revocations.interrupt) and changes her claims between interrupts.
//
//   stdout: one JSON object per line, {"event": ...}, for the driver
//   stdin:  one JSON command per line from the driver
//
// Events: "synced" (first up-to-date), "ended" (the held request the driver interrupted has
// ended, as the client saw it), "error" (onError was called: the client reports the error
// and the stream stops), "done" (every response and change message received).
// Commands:
//   {"cmd": "mark"}     remember how many responses were seen (before an interrupt)
//   {"cmd": "ended"}    wait until the live request held at the mark has ended: a 503 for a
//                       long-poll, the start of the next request for an SSE stream (which
//                       ends with a clean end of body); report when (Date.now(), ms)
//   {"cmd": "error"}    wait until onError was called; report the error
//   {"cmd": "finish"}   report and exit 0

import { Shape, ShapeStream, isChangeMessage } from '@electric-sql/client'
import { commandQueue, emit, requireEnv, toJson } from './protocol.mjs'

const PROXY_URL = requireEnv('E2E_PROXY_URL')
const TOKEN = requireEnv('E2E_TOKEN')
const STEP_TIMEOUT_MS = Number(process.env.E2E_STEP_TIMEOUT_MS ?? '15000')
const LIVE_SSE = process.env.E2E_LIVE_SSE === '1'

function fail(reason, data = {}) {
  emit('failed', { reason, ...data, responses })
  process.exit(1)
}

process.on('uncaughtException', (error) => fail('uncaught exception', { message: String(error) }))
// The stream stopping after onError may reject the Shape's pending promise: expected here.
process.on('unhandledRejection', (error) => process.stderr.write(`rejection: ${error}\n`))

const responses = []
const requests = []
const messages = []
let reported = null

async function recordingFetch(input, init) {
  const url = new URL(input instanceof Request ? input.url : input.toString())
  const params = Object.fromEntries(url.searchParams)
  requests.push({ params, at: Date.now() })
  const response = await fetch(input, init)
  responses.push({ params, status: response.status, at: Date.now() })
  return response
}

const stream = new ShapeStream({
  url: PROXY_URL,
  params: { table: 'todos' },
  headers: { Authorization: `Bearer ${TOKEN}` },
  fetchClient: recordingFetch,
  liveSse: LIVE_SSE,
  // Returning nothing stops the stream: access is gone, nothing to retry with.
  onError: (error) => {
    reported = { status: error.status ?? null, message: String(error.message ?? error), at: Date.now() }
  },
})
stream.subscribe((batch) => {
  for (const message of batch) {
    if (isChangeMessage(message)) messages.push({ id: Number(message.value.id), at: Date.now() })
  }
})
const shape = new Shape(stream)

async function until(condition, what) {
  const deadline = Date.now() + STEP_TIMEOUT_MS
  while (!condition()) {
    if (Date.now() > deadline) fail(`${what}: not reached within ${STEP_TIMEOUT_MS} ms`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

const nextCommand = commandQueue()
const initial = await shape.rows
emit('synced', { rows: initial.map((r) => Number(r.id)) })

let mark = { responses: 0, requests: 0 }
for (;;) {
  const command = await nextCommand()
  if (command.cmd === 'mark') {
    mark = { responses: responses.length, requests: requests.length }
    emit('marked')
  } else if (command.cmd === 'ended') {
    if (LIVE_SSE) {
      await until(() => requests.length > mark.requests, 'the next request after the SSE end')
      emit('ended', { at: requests[mark.requests].at, status: 200 })
    } else {
      const ended = () => responses.slice(mark.responses).find((r) => r.status === 503)
      await until(() => ended() !== undefined, 'the 503 of the interrupted long-poll')
      emit('ended', { at: ended().at, status: 503 })
    }
  } else if (command.cmd === 'error') {
    await until(() => reported !== null, 'onError')
    emit('error', reported)
  } else if (command.cmd === 'finish') {
    emit('done', { responses, messages, rows: shape.currentRows.map((r) => Number(r.id)) })
    process.exit(0)
  } else if (command.cmd === 'exit') {
    process.exit(2)
  } else {
    fail(`unknown command ${toJson(command)}`)
  }
}
