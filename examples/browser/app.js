// A live list of the signed-in user's todos, synced with the real Electric client through
// electric-proxy, from a page on another origin than the proxy.
//
// Query string: ?proxy=<the proxy's shape URL>&token=<a bearer token>
// The token in the URL keeps the example to one static page; a real app would take it from
// its login flow, or send no Authorization at all and let the proxy read its session cookie
// (`credentials: 'include'` below sends cookies cross-origin; the proxy's `cors` step must
// list this page's origin with `allow_credentials = true`).
//
// The proxy decides the shape: the page asks for `table=todos` and gets only the rows of the
// user's organisation, with the columns the policy allows. It never sees Electric's secret.

import { Shape, ShapeStream } from '@electric-sql/client'

const query = new URLSearchParams(window.location.search)
const proxyUrl = query.get('proxy') ?? 'http://localhost:8080/v1/shape'
const token = query.get('token')

const statusLine = document.getElementById('status')
const list = document.getElementById('todos')
document.getElementById('who').textContent = `Proxy: ${proxyUrl}`

function setStatus(state, text) {
  statusLine.dataset.state = state
  statusLine.textContent = text
}

function render(rows) {
  const sorted = [...rows].sort((a, b) => Number(a.id) - Number(b.id))
  const items = sorted.map((row) => {
    const item = document.createElement('li')
    item.dataset.id = String(row.id)
    item.dataset.org = row.org_id
    item.dataset.done = String(row.done)
    const title = document.createElement('span')
    title.className = 'title'
    title.textContent = row.title
    const org = document.createElement('span')
    org.className = 'org'
    org.textContent = row.org_id
    item.append(title, org)
    return item
  })
  list.replaceChildren(...items)
  setStatus('live', `${items.length} todo${items.length === 1 ? '' : 's'} · live`)
}

const stream = new ShapeStream({
  url: proxyUrl,
  params: { table: 'todos' },
  headers: token ? { Authorization: `Bearer ${token}` } : {},
  fetchClient: (input, init) => fetch(input, { ...init, credentials: 'include' }),
  // 4xx answers (a bad token: 401, a shape the policy refuses: 403) and protocol breaks end
  // up here; returning nothing stops the stream.
  onError: (error) => {
    const status = error.status ? ` (HTTP ${error.status})` : ''
    setStatus('error', `Sync stopped${status}: ${error.message}`)
  },
})

const shape = new Shape(stream)
// Called once the first sync is up to date, then on every change.
shape.subscribe(({ rows }) => render(rows))
setStatus('syncing', 'Syncing…')
