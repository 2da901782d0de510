// Calls one clawgate method through OpenClaw's own npm client, `openclaw-node`, unmodified:
// challenge -> connect (token + signed Ed25519 device identity) -> hello-ok -> request -> health.
// Usage: node call.js <ws-url> <token> <method> <params-json> <device-identity-path>
// Prints one JSON line {hello, payload, health, deviceId}; exits non-zero on any failure.
"use strict";

const fs = require("fs");
const { OpenClawClient } = require("openclaw-node");

async function main() {
  const [url, token, method, paramsJson, deviceIdentityPath] = process.argv.slice(2);
  if (!url || !method || !deviceIdentityPath) {
    throw new Error("usage: node call.js <ws-url> <token> <method> <params-json> <device-identity-path>");
  }
  const client = new OpenClawClient({
    url,
    token: token || undefined,
    autoReconnect: false,
    deviceIdentityPath,
    maxMessageSize: 64 * 1024 * 1024,
  });
  // The client emits "error" events; without a listener Node would throw them.
  const errors = [];
  client.on("error", (err) => errors.push(String(err && err.message ? err.message : err)));
  const hello = await client.connect();
  const res = await client.request(method, JSON.parse(paramsJson || "{}"));
  const health = await client.health();
  const deviceId = JSON.parse(fs.readFileSync(deviceIdentityPath, "utf8")).deviceId;
  await client.disconnect();
  process.stdout.write(JSON.stringify({ hello, payload: res.payload, health, deviceId, errors }) + "\n");
}

const watchdog = setTimeout(() => {
  process.stderr.write("call.js: no answer within 60 s\n");
  process.exit(3);
}, 60000);

main().then(
  () => {
    clearTimeout(watchdog);
    process.exit(0);
  },
  (err) => {
    process.stderr.write(`call.js: ${err && err.stack ? err.stack : err}\n`);
    process.exit(2);
  },
);
