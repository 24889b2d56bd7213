// The real @electric-sql/client, in Node, syncing a shape through electric-proxy.
//
// Driven by tests/e2e/test_node_client.py, which plays the database (it changes the fake
// Electric's rows at the right moments) and knows which rows the user must end up with.
//
//   stdout: one JSON object per line, {"event": ...}, for the driver
//   stdin:  one JSON command per line from the driver
//
// Events: "synced" (first up-to-date), "reached" (a `wait`/`resume` condition holds),
// "paused", "done" (with every response the client received), "failed" (then exit 1).
// Commands:
//   {"cmd": "wait", "step": s, "rows": {id: row}, "expect_409": bool}
//       until the Shape is up to date with exactly these rows (and, with expect_409, the
//       client went through a 409 must-refetch to a new handle since the command)
//   {"cmd": "pause"}                   abort the stream; report its offset and handle
//   {"cmd": "resume", "step": s, "rows": {...}}
//       a new ShapeStream from the paused offset/handle (catch-up), applied onto the rows
//       held at the pause, until up to date with exactly these rows
//   {"cmd": "finish"}                  report and exit 0
//
// The script fails by itself (event "failed", exit 1) when the client reports an error, a
// row of another tenant arrives, or a condition is not reached within E2E_STEP_TIMEOUT_MS.

import { Shape, ShapeStream, isChangeMessage } from '@electric-sql/client'
import { commandQueue, emit, requireEnv, toJson } from './protocol.mjs'

const PROXY_URL = requireEnv('E2E_PROXY_URL')
const TOKEN = requireEnv('E2E_TOKEN')
const TENANT = requireEnv('E2E_TENANT')
const TABLE = process.env.E2E_TABLE ?? 'todos'
const STEP_TIMEOUT_MS = Number(process.env.E2E_STEP_TIMEOUT_MS ?? '10000')
// Live mode: long-polls by default, Server-Sent Events with E2E_LIVE_SSE=1.
const LIVE_SSE = process.env.E2E_LIVE_SSE === '1'

function fail(reason, data = {}) {
  emit('failed', { reason, ...data, responses })
  process.exit(1)
}

function describeError(error) {
  if (error instanceof Error) {
    return { name: error.name, message: error.message, status: error.status ?? null }
  }
  return { name: typeof error, message: String(error), status: null }
}

process.on('unhandledRejection', (error) => fail('unhandled rejection', describeError(error)))
process.on('uncaughtException', (error) => fail('uncaught exception', describeError(error)))

// -- every response the client receives, as the client sees it -------------------------------

const responses = []

async function recordingFetch(input, init) {
  const url = new URL(input instanceof Request ? input.url : input.toString())
  const response = await fetch(input, init)
  const h = response.headers
  responses.push({
    params: Object.fromEntries(url.searchParams),
    status: response.status,
    // undici decodes gzip/deflate bodies itself and keeps the header: the client parses the
    // decoded JSON, so a gzip response whose rows arrive proves the whole path.
    contentEncoding: h.get('content-encoding'),
    handle: h.get('electric-handle'),
    offset: h.get('electric-offset'),
    cursor: h.get('electric-cursor'),
    upToDate: h.has('electric-up-to-date'),
  })
  return response
}

// -- the shape -----------------------------------------------------------------------------

function streamOptions(extra) {
  return {
    url: PROXY_URL,
    params: { table: TABLE },
    headers: { Authorization: `Bearer ${TOKEN}` },
    fetchClient: recordingFetch,
    liveSse: LIVE_SSE,
    // Any error that reaches onError is a failure of the path under test (401/400/403, a
    // response missing electric-* headers...). 409 must-refetch never gets here: the client
    // handles it internally. Returning nothing would stop the stream; exiting says why.
    onError: (error) => fail('the client reported an error', describeError(error)),
    ...extra,
  }
}

const foreign = []

// Every change message is checked, not only the materialised rows: a foreign row that
// arrived and was later deleted must still fail the run.
function watchTenant(stream) {
  stream.subscribe((messages) => {
    for (const message of messages) {
      if (!isChangeMessage(message)) continue
      const org = message.value?.org_id
      if (org !== undefined && org !== TENANT) {
        foreign.push(message)
        fail(`a row of another tenant (${org}) arrived`, { message })
      }
    }
  })
}

function rowsById(rows) {
  const byId = {}
  for (const row of rows) byId[String(row.id)] = row
  return byId
}

function sameRows(actual, expected) {
  const a = rowsById(actual)
  const wantIds = Object.keys(expected).sort()
  const haveIds = Object.keys(a).sort()
  if (toJson(wantIds) !== toJson(haveIds)) return false
  return wantIds.every((id) =>
    Object.entries(expected[id]).every(([column, value]) => toJson(a[id][column]) === toJson(value))
  )
}

function sortedRows(rows) {
  return [...rows].sort((x, y) => Number(x.id) - Number(y.id))
}

async function until(condition, step, describe) {
  const deadline = Date.now() + STEP_TIMEOUT_MS
  while (!condition()) {
    if (Date.now() > deadline) {
      fail(`step ${step}: condition not reached within ${STEP_TIMEOUT_MS} ms`, describe())
    }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

let controller = new AbortController()
let stream = new ShapeStream(streamOptions({ signal: controller.signal }))
watchTenant(stream)
const shape = new Shape(stream)

// -- commands --------------------------------------------------------------------------------

let paused = null // {offset, handle, rows: Map(key -> row)}

async function waitFor(command) {
  const handleBefore = stream.shapeHandle
  const seenBefore = responses.length
  const refetched = () =>
    responses.slice(seenBefore).some((r) => r.status === 409) &&
    stream.shapeHandle !== handleBefore
  await until(
    () =>
      stream.isUpToDate &&
      sameRows(shape.currentRows, command.rows) &&
      (!command.expect_409 || refetched()),
    command.step,
    () => ({ rows: sortedRows(shape.currentRows), handle: stream.shapeHandle, handleBefore })
  )
  emit('reached', {
    step: command.step,
    rows: sortedRows(shape.currentRows),
    handle: stream.shapeHandle,
    handleBefore,
    offset: stream.lastOffset,
  })
}

async function pause() {
  if (!stream.isUpToDate) fail('pause: the stream is not up to date')
  paused = {
    offset: stream.lastOffset,
    handle: stream.shapeHandle,
    rows: new Map(shape.currentValue),
  }
  controller.abort()
  emit('paused', { offset: paused.offset, handle: paused.handle })
}

async function resume(command) {
  if (paused === null) fail('resume without pause')
  const rows = paused.rows
  const firstResponse = responses.length
  controller = new AbortController()
  stream = new ShapeStream(
    streamOptions({ signal: controller.signal, offset: paused.offset, handle: paused.handle })
  )
  watchTenant(stream)
  stream.subscribe((messages) => {
    for (const message of messages) {
      if (!isChangeMessage(message)) continue
      const op = message.headers.operation
      if (op === 'insert') rows.set(message.key, message.value)
      else if (op === 'update') rows.set(message.key, { ...rows.get(message.key), ...message.value })
      else if (op === 'delete') rows.delete(message.key)
    }
  })
  await until(
    () => stream.isUpToDate && sameRows([...rows.values()], command.rows),
    command.step,
    () => ({ rows: sortedRows(rows.values()) })
  )
  const catchUp = responses.slice(firstResponse).filter((r) => r.params.live === undefined)
  emit('reached', {
    step: command.step,
    rows: sortedRows(rows.values()),
    handle: stream.shapeHandle,
    offset: stream.lastOffset,
    catchUp,
  })
}

function finish() {
  controller.abort()
  emit('done', { responses, foreign: foreign.length })
  process.exit(0)
}

// -- main ------------------------------------------------------------------------------------

const nextCommand = commandQueue()

const timer = setTimeout(
  () => fail(`no initial sync within ${STEP_TIMEOUT_MS} ms`),
  STEP_TIMEOUT_MS
)
const initial = await shape.rows
clearTimeout(timer)
emit('synced', {
  rows: sortedRows(initial),
  handle: stream.shapeHandle,
  offset: stream.lastOffset,
  responses,
})

for (;;) {
  const command = await nextCommand()
  switch (command.cmd) {
    case 'wait':
      await waitFor(command)
      break
    case 'pause':
      await pause()
      break
    case 'resume':
      await resume(command)
      break
    case 'finish':
      finish()
      break
    case 'exit':
      process.exit(2)
      break
    default:
      fail(`unknown command ${toJson(command)}`)
  }
}
