'use strict'
// A small HTTP app wrapped by the real npm package `sigsci-module-nodejs`, so that the
// sigsci-proxy (or the agent simulator) is exercised by a real module, byte for byte.
//
// Environment:
//   SIGSCI_RPC_HOST     agent (or proxy) TCP host, default 127.0.0.1 (used when SIGSCI_RPC_PORT is set)
//   SIGSCI_RPC_PORT     agent (or proxy) TCP port; when set the module speaks TCP
//   SIGSCI_RPC_PATH     agent Unix socket path, used when SIGSCI_RPC_PORT is unset
//                       (default /var/run/sigsci.sock, the module's own default)
//   SIGSCI_TIMEOUT_MS   the module's socketTimeout (an idle timeout per RPC socket), default 100
//   SIGSCI_DEBUG        "1" turns on the module's debug log
//   PORT                HTTP listening port, default 8080; 0 picks a free one
//   HOST                HTTP listening address, default 0.0.0.0 (tests pass 127.0.0.1)
//
// Once listening it prints `listening port=NNNN` on stdout.
//
// Routes (every method):
//   /status/NNN     answers NNN (e.g. /status/500 makes the module send an anomalous PostRequest)
//   /large?kb=N     answers 200 with N KiB (default 600: above the module's 512 KiB anomaly size)
//   /slow?ms=N      answers 200 after N ms (default 1100: above the module's 1 s anomaly duration)
//   /healthz        answers 200 without going through the module (container probes)
//   anything else   answers 200 "ok", echoing the request body length for POST/PUT/PATCH
// A response the agent flagged (it returned a RequestID) carries `X-Sigsci-Request-Id`.

const http = require('http')
const Sigsci = require('sigsci-module-nodejs')

function moduleOptions (env) {
  const opts = {
    socketTimeout: parseIntOr(env.SIGSCI_TIMEOUT_MS, 100),
    debug: env.SIGSCI_DEBUG === '1'
  }
  if (env.SIGSCI_RPC_PORT) {
    // The module switches to TCP as soon as a `port` key exists (sigsci.js:273).
    opts.port = parseIntOr(env.SIGSCI_RPC_PORT, 0)
    // Explicit host: the module passes its options to net.Socket#connect, whose default host
    // 'localhost' may resolve to ::1 first.
    opts.host = env.SIGSCI_RPC_HOST || '127.0.0.1'
  } else if (env.SIGSCI_RPC_PATH) {
    opts.path = env.SIGSCI_RPC_PATH
  }
  return opts
}

function parseIntOr (s, dflt) {
  const n = parseInt(s, 10)
  return Number.isFinite(n) ? n : dflt
}

function app (req, res) {
  // The module keeps the agent's PreRequest answer on the request (sigsci.js:548). Exposing the
  // RequestID lets a test know which responses will be followed by an UpdateRequest.
  if (req.SigSciAgent && req.SigSciAgent.RequestID) {
    res.setHeader('X-Sigsci-Request-Id', String(req.SigSciAgent.RequestID))
  }
  const url = new URL(req.url, 'http://x')
  const status = /^\/status\/(\d{3})$/.exec(url.pathname)
  if (status) {
    res.writeHead(Number(status[1]), { 'Content-Type': 'text/plain' })
    res.end('status ' + status[1] + '\n')
    return
  }
  if (url.pathname === '/large') {
    const kb = parseIntOr(url.searchParams.get('kb'), 600)
    const body = Buffer.alloc(kb * 1024, 'a')
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length })
    res.end(body)
    return
  }
  if (url.pathname === '/slow') {
    const ms = parseIntOr(url.searchParams.get('ms'), 1100)
    setTimeout(() => {
      res.writeHead(200, { 'Content-Type': 'text/plain' })
      res.end('slow ' + ms + '\n')
    }, ms)
    return
  }
  let len = 0
  req.on('data', (chunk) => { len += chunk.length })
  req.on('end', () => {
    res.writeHead(200, { 'Content-Type': 'text/plain' })
    res.end('ok ' + len + '\n')
  })
}

function main () {
  const sigsci = new Sigsci(moduleOptions(process.env))
  const wrapped = sigsci.wrap(app)
  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(200, { 'Content-Type': 'text/plain' })
      res.end('ok\n')
      return
    }
    wrapped(req, res)
  })
  const port = parseIntOr(process.env.PORT, 8080)
  const host = process.env.HOST || '0.0.0.0'
  server.listen(port, host, () => {
    process.stdout.write('listening port=' + server.address().port + '\n')
  })
  const stop = () => {
    server.close(() => process.exit(0))
    setTimeout(() => process.exit(0), 2000).unref()
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

if (require.main === module) {
  main()
}

module.exports = { moduleOptions, app }
