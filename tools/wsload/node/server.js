// Baseline for `wsload fanout`: a minimal Node `ws` broadcast server speaking the same protocol subset
// as Troupe's /ws (subscribe acks, `{"channel","offset","data"}` frames, POST .../publish). A publish
// serializes its frame once and sends the same string to every subscriber.
// Run: npm ci && node server.js [port]
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 9001);
const channels = new Map(); // name -> { offset, subs: Set<ws> }
const channel = (name) => {
  let c = channels.get(name);
  if (!c) { c = { offset: 0, subs: new Set() }; channels.set(name, c); }
  return c;
};
const subscribe = (ws, name) => {
  const c = channel(name);
  c.subs.add(ws);
  ws.channels.add(name);
  ws.send(JSON.stringify({ op: 'subscribed', channel: name, offset: c.offset, replayed: 0 }));
};

const server = http.createServer((req, res) => {
  const m = /^\/api\/v1\/channels\/([^/]+)\/publish$/.exec(req.url);
  if (req.method !== 'POST' || !m) { res.writeHead(404).end(); return; }
  const chunks = [];
  req.on('data', (d) => chunks.push(d));
  req.on('end', () => {
    let body;
    try { body = JSON.parse(Buffer.concat(chunks).toString()); } catch { res.writeHead(400).end(); return; }
    const name = decodeURIComponent(m[1]);
    const c = channel(name);
    c.offset += 1;
    const frame = `{"channel":${JSON.stringify(name)},"offset":${c.offset},"data":${JSON.stringify(body.data)}}`;
    for (const ws of c.subs) ws.send(frame);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ channel: name, offset: c.offset }));
  });
});

const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024, perMessageDeflate: false });
server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  const token = url.searchParams.get('token');
  if (url.pathname !== '/ws' || !token) { socket.destroy(); return; }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.channels = new Set();
    subscribe(ws, `notifications:${token}`);
    ws.on('message', (data) => {
      let op;
      try { op = JSON.parse(data.toString()); } catch { return; }
      if (op.op === 'subscribe' && typeof op.channel === 'string') subscribe(ws, op.channel);
      else if (op.op === 'ping') ws.send('{"op":"pong"}');
    });
    ws.on('close', () => { for (const n of ws.channels) channel(n).subs.delete(ws); });
  });
});

server.listen(port, '127.0.0.1', () => console.error(`node ws baseline pid ${process.pid} on 127.0.0.1:${port}`));
