// The chat page: one WebSocket to the chat service (libipc/examples/chatd.rs)
// through the websocketd that served this page. Same host and port, so the
// same origin, which websocketd accepts by default; ws: or wss: as the page
// came by http: or https:.
//
// chatd sends every message to everyone, the sender included: a line shows
// here when the room has it, never before. Text from the network only ever goes
// into textContent, never into HTML.
'use strict';

const SERVICE = 'chat';
// Lines kept on the page: older ones are removed.
const MAX_LINES = 500;
// Reconnection: the first retry after about a second, each next one twice as
// late, up to half a minute; back to quick retries once a connection has
// lasted STABLE_MS.
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30000;
const STABLE_MS = 10000;

const state = document.getElementById('state');
const log = document.getElementById('messages');
const form = document.getElementById('send-form');
const input = document.getElementById('message');
const button = document.getElementById('send');

let socket = null;
let retryMs = RETRY_MIN_MS;

function serviceUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/${SERVICE}`;
}

function setState(text, connected) {
  state.textContent = text;
  button.disabled = !connected;
  document.body.dataset.connected = String(connected);
}

function show(text) {
  const line = document.createElement('li');
  line.textContent = text;
  log.append(line);
  while (log.children.length > MAX_LINES) {
    log.firstElementChild.remove();
  }
  log.scrollTop = log.scrollHeight;
}

function connect() {
  if (!location.host) {
    setState('no server: open this page from websocketd (--static-dir)', false);
    return;
  }
  setState('connecting…', false);
  const ws = new WebSocket(serviceUrl());
  ws.binaryType = 'arraybuffer';
  let openedAt = null;
  ws.onopen = () => {
    openedAt = Date.now();
    setState('connected', true);
  };
  ws.onmessage = (event) => {
    const text = typeof event.data === 'string'
      ? event.data
      : new TextDecoder().decode(event.data);
    show(text);
  };
  // An error is always followed by close: all is handled there.
  ws.onclose = (event) => {
    socket = null;
    if (openedAt !== null && Date.now() - openedAt >= STABLE_MS) {
      retryMs = RETRY_MIN_MS;
    }
    // Somewhere between half and all of retryMs, so that the pages a restart
    // disconnected do not all come back in the same instant.
    const delay = Math.round(retryMs * (0.5 + Math.random() / 2));
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    const why = event.code === 1006 ? '' : ` (${event.code}${event.reason ? ': ' + event.reason : ''})`;
    setState(`disconnected${why}; retrying in ${Math.ceil(delay / 1000)} s`, false);
    setTimeout(reconnectWhenVisible, delay);
  };
  socket = ws;
}

// A tab nobody looks at waits until it is looked at before reconnecting.
function reconnectWhenVisible() {
  if (!document.hidden) {
    connect();
    return;
  }
  setState('disconnected; will reconnect when this tab is visible', false);
  document.addEventListener('visibilitychange', reconnectWhenVisible, { once: true });
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = input.value;
  if (text === '' || socket === null || socket.readyState !== WebSocket.OPEN) {
    return;
  }
  socket.send(text);
  input.value = '';
  input.focus();
});

connect();
