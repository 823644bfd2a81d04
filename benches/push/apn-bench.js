// The same load as `push-load URL CA apns COUNT 1 IN_FLIGHT`, from @parse/node-apn:
// node apn-bench.js URL CA_FILE COUNT [IN_FLIGHT]
// Prints one JSON line like push-load's.
'use strict';
const fs = require('fs');
const path = require('path');
const apn = require('@parse/node-apn');

const [url, caFile, countArg, inFlightArg] = process.argv.slice(2);
if (!url || !caFile || !countArg) {
  console.error('usage: node apn-bench.js URL CA_FILE COUNT [IN_FLIGHT]');
  process.exit(2);
}
const { hostname, port } = new URL(url);
if (!['127.0.0.1', '[::1]', 'localhost'].includes(hostname)) {
  console.error('loopback targets only');
  process.exit(2);
}
const count = Number(countArg);
const inFlight = Number(inFlightArg || 500);
const fixtures = path.join(__dirname, '../../adapters/tests/fixtures');

const provider = new apn.Provider({
  token: {
    key: fs.readFileSync(path.join(fixtures, 'apns-test-key.p8')),
    keyId: 'ABC123DEFG',
    teamId: 'TEAM123456',
  },
  address: hostname,
  port: Number(port),
  ca: [fs.readFileSync(caFile)],
  production: false,
});

function note(i) {
  const n = new apn.Notification();
  n.topic = 'es.gob.clave';
  n.expiry = 4102444800;
  n.priority = 10;
  n.pushType = 'alert';
  n.collapseId = 'vf_' + i.toString(16).padStart(32, '0');
  n.alert = {
    title: 'Código de verificación · 427',
    body: '042317 es tu código de verificación. Caduca en 10 min. No lo compartas con nadie.',
  };
  n.payload = { otpd: { verification_id: n.collapseId, match_code: '427' } };
  return n;
}

async function main() {
  const token = (i) => i.toString(16).padStart(64, '0');
  const warm = await provider.send(note(0), token(0));
  if (warm.failed.length) {
    console.error('the first push was not accepted', JSON.stringify(warm.failed[0]));
    process.exit(1);
  }
  let next = 0;
  let accepted = 0;
  let other = 0;
  const deadline = Date.now() + 120000;
  const started = process.hrtime.bigint();
  async function worker() {
    while (next < count && Date.now() < deadline) {
      const i = ++next;
      const r = await provider.send(note(i), token(i));
      accepted += r.sent.length;
      other += r.failed.length;
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(JSON.stringify({
    client: '@parse/node-apn',
    provider: 'apns',
    connections: 1,
    in_flight: inFlight,
    accepted,
    other,
    seconds,
    rate: accepted / seconds,
  }));
  provider.shutdown();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
