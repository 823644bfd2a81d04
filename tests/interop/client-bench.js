// Load from an independent client: the npm `smpp` package binds to an SMSC and
// submits COUNT messages keeping WINDOW outstanding, then prints the rate as JSON.
// Usage: node client-bench.js HOST:PORT COUNT [WINDOW]
'use strict';
const smpp = require('smpp');

const [hostPort, countArg, windowArg] = process.argv.slice(2);
const [host, port] = hostPort.split(':');
const count = parseInt(countArg, 10);
const window = parseInt(windowArg || '64', 10);
if (!host.startsWith('127.') && host !== 'localhost' && host !== '::1') {
  console.error('loopback targets only');
  process.exit(2);
}

const session = smpp.connect({ host, port: parseInt(port, 10) });
session.on('error', (e) => { console.error(e.message); process.exit(1); });
session.bind_transceiver({ system_id: 'npm', password: 'npm' }, (pdu) => {
  if (pdu.command_status !== 0) { console.error('bind failed'); process.exit(1); }
  let sent = 0, done = 0, refused = 0;
  const started = process.hrtime.bigint();
  const pump = () => {
    while (sent < count && sent - done < window) {
      sent++;
      session.submit_sm({
        source_addr_ton: 5, source_addr_npi: 0, source_addr: 'npm',
        dest_addr_ton: 1, dest_addr_npi: 1, destination_addr: '34600123456',
        short_message: '123456 es tu codigo de verificacion. Caduca en 10 min.',
      }, (resp) => {
        done++;
        if (resp.command_status !== 0) refused++;
        if (done === count) {
          const seconds = Number(process.hrtime.bigint() - started) / 1e9;
          console.log(JSON.stringify({ client: 'npm smpp 0.5.1', submits: count, refused, seconds, rate: count / seconds }));
          session.close();
          process.exit(0);
        } else {
          pump();
        }
      });
    }
  };
  pump();
});
setTimeout(() => { console.error('timed out'); process.exit(1); }, 120000).unref();
