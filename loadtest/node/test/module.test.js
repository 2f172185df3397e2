'use strict'
// End-to-end check with the real npm module: server.js (wrapped by sigsci-module-nodejs) talks
// to an agent address — one simulated agent, or the sigsci-proxy in front of several — and the
// simulators' counters must show every RPC arriving where it belongs.
//
// Environment (scripts/node-module-test.sh sets all of it):
//   SIGSCI_TEST_AGENT_RPC       host:port the module connects to (agent or proxy); required
//   SIGSCI_TEST_AGENT_ADMINS    comma-separated host:port of every simulator's admin server
//                               (counters are summed); or SIGSCI_TEST_AGENT_ADMIN for one
//   SIGSCI_TEST_REQUESTS        normal GET requests, default 200
//   SIGSCI_TEST_ATTACKS         attack requests (URI or JSON body containing `<script`), default 20
//   SIGSCI_TEST_ERRORS          requests the app answers 500 (anomalous), default 10
//   SIGSCI_TEST_CONCURRENCY     HTTP requests in flight, default 8
//   SIGSCI_TEST_MODULE_TIMEOUT_MS  the module's socketTimeout, default 1000: on a loaded 2-core
//                               box the module's 100 ms default can fail open now and then, which
//                               would make the counts flaky; the proxy's latency is measured by
//                               the loadtest, not here.
//
// Without SIGSCI_TEST_AGENT_RPC the test is skipped: it needs a running agent or proxy.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const path = require('node:path')
const { spawn } = require('node:child_process')

const env = process.env
const RPC = env.SIGSCI_TEST_AGENT_RPC
const ADMINS = (env.SIGSCI_TEST_AGENT_ADMINS || env.SIGSCI_TEST_AGENT_ADMIN || '')
  .split(',').map((s) => s.trim()).filter(Boolean)
const num = (v, d) => (v === undefined || v === '' ? d : Number(v))
const NORMAL = num(env.SIGSCI_TEST_REQUESTS, 200)
const ATTACKS = num(env.SIGSCI_TEST_ATTACKS, 20)
const ERRORS = num(env.SIGSCI_TEST_ERRORS, 10)
const CONCURRENCY = num(env.SIGSCI_TEST_CONCURRENCY, 8)
const MODULE_TIMEOUT_MS = num(env.SIGSCI_TEST_MODULE_TIMEOUT_MS, 1000)

const COUNTERS = ['prerequests', 'updaterequests', 'updates_matched', 'updates_orphaned',
  'postrequests', 'moduleinits', 'malformed']

function splitHostPort (addr) {
  const i = addr.lastIndexOf(':')
  if (i < 0) throw new Error(`${addr} is not host:port`)
  return { host: addr.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(addr.slice(i + 1)) }
}

// One HTTP request with a hard deadline; resolves { status, headers, body }.
function request (opts, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ timeout: 10000, ...opts }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`${opts.method || 'GET'} ${opts.path}: no answer in 10 s`)))
    req.on('error', reject)
    req.end(body)
  })
}

async function stats (admin) {
  const { host, port } = splitHostPort(admin)
  const res = await request({ host, port, path: '/stats', agent: false })
  assert.equal(res.status, 200, `GET http://${admin}/stats answered ${res.status}`)
  return JSON.parse(res.body)
}

// Counters summed over every simulator; keys a simulator does not report are left undefined.
async function totals () {
  const all = await Promise.all(ADMINS.map(stats))
  const sum = {}
  for (const s of all) {
    for (const [k, v] of Object.entries(s)) {
      if (typeof v === 'number') sum[k] = (sum[k] || 0) + v
    }
  }
  return sum
}

function delta (after, before) {
  const d = {}
  for (const k of Object.keys(after)) d[k] = after[k] - (before[k] || 0)
  return d
}

// Starts server.js on 127.0.0.1:0 and resolves once it printed its port.
function startApp () {
  const { host, port } = splitHostPort(RPC)
  const child = spawn(process.execPath, [path.join(__dirname, '..', 'server.js')], {
    env: {
      ...env,
      PORT: '0',
      HOST: '127.0.0.1',
      SIGSCI_RPC_HOST: host,
      SIGSCI_RPC_PORT: String(port),
      SIGSCI_TIMEOUT_MS: String(MODULE_TIMEOUT_MS)
    },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const app = { child, output: '', exited: null }
  child.stdout.on('data', (d) => { app.output += d })
  child.stderr.on('data', (d) => { app.output += d })
  child.on('exit', (code, signal) => { app.exited = { code, signal } })
  return new Promise((resolve, reject) => {
    const deadline = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`server.js did not start in 10 s:\n${app.output}`))
    }, 10000)
    const onData = () => {
      const m = /listening port=(\d+)/.exec(app.output)
      if (m) {
        clearTimeout(deadline)
        child.stdout.off('data', onData)
        app.port = Number(m[1])
        resolve(app)
      }
    }
    child.stdout.on('data', onData)
    child.on('exit', () => {
      clearTimeout(deadline)
      reject(new Error(`server.js exited before listening:\n${app.output}`))
    })
  })
}

// Runs the async jobs with at most `limit` in flight.
async function pool (jobs, limit) {
  const results = new Array(jobs.length)
  let next = 0
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++
      results[i] = await jobs[i]()
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker))
  return results
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

test('the real Node module gets verdicts and every UpdateRequest reaches the agent that issued the RequestID',
  { skip: RPC && ADMINS.length ? false : 'set SIGSCI_TEST_AGENT_RPC and SIGSCI_TEST_AGENT_ADMIN(S) (scripts/node-module-test.sh does)', timeout: 120000 },
  async (t) => {
    const before = await totals()
    for (const k of ['prerequests', 'updaterequests', 'updates_matched', 'updates_orphaned', 'postrequests', 'malformed']) {
      assert.ok(k in before, `the simulators' /stats has no "${k}": ${JSON.stringify(before)}`)
    }
    const app = await startApp()
    t.after(() => { if (!app.exited) app.child.kill('SIGKILL') })
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY })
    t.after(() => agent.destroy())
    const base = { host: '127.0.0.1', port: app.port, agent }

    // Shuffle the kinds so attacks and errors interleave with normal traffic.
    const kinds = [
      ...Array(NORMAL).fill('normal'),
      ...Array(ATTACKS).fill('attack'),
      ...Array(ERRORS).fill('error')
    ]
    for (let i = kinds.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [kinds[i], kinds[j]] = [kinds[j], kinds[i]]
    }
    let attackNo = 0
    const jobs = kinds.map((kind, i) => async () => {
      let res
      if (kind === 'normal') {
        res = await request({ ...base, path: `/item/${i}?q=hello` })
      } else if (kind === 'error') {
        res = await request({ ...base, path: '/status/500' })
      } else if (attackNo++ % 2 === 0) {
        // Raw `<` in the path: the module sends req.url verbatim as URI.
        res = await request({ ...base, path: `/search?q=<script>alert(${i})</script>` })
      } else {
        const body = JSON.stringify({ comment: `<script>alert(${i})</script>` })
        res = await request({
          ...base,
          method: 'POST',
          path: '/comment',
          headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) }
        }, body)
      }
      return { kind, status: res.status, flagged: 'x-sigsci-request-id' in res.headers }
    })
    const results = await pool(jobs, CONCURRENCY)

    const wrong = results.filter((r) =>
      r.status !== { normal: 200, attack: 406, error: 500 }[r.kind])
    assert.deepEqual(wrong, [], `unexpected HTTP statuses; app output:\n${app.output}`)

    // UpdateRequests and PostRequests are sent after each response, on their own connections:
    // wait until the expected number has arrived (or 20 s passed).
    const total = kinds.length
    const unflaggedErrors = results.filter((r) => r.kind === 'error' && !r.flagged).length
    let d
    const deadline = Date.now() + 20000
    for (;;) {
      d = delta(await totals(), before)
      // A flagged request is followed by one UpdateRequest, an unflagged anomalous one by one
      // PostRequest. The simulator flags every request it blocks, so only unflagged 500s post.
      const done = d.prerequests >= total &&
        (!('flagged' in d) || d.updaterequests >= d.flagged) &&
        d.postrequests >= unflaggedErrors
      if (done || Date.now() > deadline) break
      await sleep(100)
    }
    // Let any stray RPC land before the final read.
    await sleep(300)
    d = delta(await totals(), before)
    const shown = JSON.stringify(Object.fromEntries(Object.entries(d).filter(([k]) =>
      COUNTERS.includes(k) || k === 'flagged' || k === 'blocked')))
    t.diagnostic(`requests=${total} (normal=${NORMAL} attacks=${ATTACKS} errors=${ERRORS}) ` +
      `flagged responses seen by the app=${results.filter((r) => r.flagged).length} counters=${shown}`)

    assert.equal(app.exited, null, `server.js died:\n${app.output}`)
    assert.equal(d.prerequests, total, `PreRequests: ${shown}`)
    assert.equal(d.malformed, 0, `malformed: ${shown}`)
    assert.equal(d.updates_orphaned, 0, `orphaned UpdateRequests: ${shown}`)
    assert.ok(d.updaterequests > 0, `no UpdateRequest at all (the attacks should be flagged): ${shown}`)
    assert.equal(d.updates_matched, d.updaterequests, `UpdateRequests not matched: ${shown}`)
    if ('flagged' in d) {
      assert.equal(d.updaterequests, d.flagged, `a flagged request's UpdateRequest is missing: ${shown}`)
    }
    if ('blocked' in d) assert.equal(d.blocked, ATTACKS, `blocked: ${shown}`)
    assert.equal(d.postrequests, unflaggedErrors, `PostRequests (one per unflagged 500): ${shown}`)
    if ('moduleinits' in d) assert.equal(d.moduleinits, 0, `the Node module never sends ModuleInit: ${shown}`)
    // Every fail-open or RPC error is logged by the module with a "SIGSCI" prefix.
    const moduleErrors = app.output.split('\n').filter((l) => l.startsWith('SIGSCI'))
    assert.deepEqual(moduleErrors, [], 'the module logged RPC errors (it failed open)')

    app.child.kill('SIGTERM')
  })
