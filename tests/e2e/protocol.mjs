// The JSON-lines protocol between the Node side of the e2e tests and tests/e2e/e2e_support.py:
// events on stdout, commands on stdin; stdin closing (the Python side went away) is an
// {"cmd": "exit"}, so a driver never outlives the test.

import { createInterface } from 'node:readline'

// int8 columns arrive as BigInt (the client's default parser); JSON has no BigInt.
export function toJson(value) {
  return JSON.stringify(value, (_key, v) => (typeof v === 'bigint' ? Number(v) : v))
}

export function emit(event, data = {}) {
  // Writes to a pipe are synchronous in Node on Linux, so nothing is lost on exit.
  process.stdout.write(toJson({ event, ...data }) + '\n')
}

export function requireEnv(name) {
  const value = process.env[name]
  if (!value) {
    emit('failed', { reason: `environment variable ${name} is not set` })
    process.exit(1)
  }
  return value
}

// The commands the Python side sends, one at a time: `await next()`.
export function commandQueue() {
  const queue = []
  let wake = null
  const lines = createInterface({ input: process.stdin })
  lines.on('line', (line) => {
    if (!line.trim()) return
    queue.push(JSON.parse(line))
    wake?.()
  })
  lines.on('close', () => {
    queue.push({ cmd: 'exit' })
    wake?.()
  })
  return async function next() {
    while (queue.length === 0) await new Promise((resolve) => (wake = resolve))
    return queue.shift()
  }
}
