// An SMSC built on the npm `smpp` package's server, as an independent peer for
// otpd's interoperability test. Accepts any bind, answers submit_sm with a
// message id, and sends a delivery receipt (text form + TLVs) when one is asked for.
// Prints "listening PORT" once ready; listens on 127.0.0.1 only.
'use strict';
const smpp = require('smpp');

let nextId = 41000;
const server = smpp.createServer((session) => {
  session.on('bind_transceiver', (pdu) => {
    session.send(pdu.response());
  });
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => {
    session.send(pdu.response());
    session.close();
  });
  session.on('deliver_sm_resp', () => {});
  session.on('submit_sm', (pdu) => {
    const id = (nextId++).toString(16).toUpperCase();
    session.send(pdu.response({ message_id: id }));
    if (pdu.registered_delivery & 0x01) {
      setTimeout(() => {
        session.deliver_sm({
          source_addr_ton: pdu.dest_addr_ton,
          source_addr_npi: pdu.dest_addr_npi,
          source_addr: pdu.destination_addr,
          dest_addr_ton: pdu.source_addr_ton,
          dest_addr_npi: pdu.source_addr_npi,
          destination_addr: pdu.source_addr,
          esm_class: 0x04,
          // The text form says the id in decimal; the TLV is left out on purpose so
          // that otpd must match the text's decimal id to the hex one it was given.
          short_message: `id:${parseInt(id, 16)} sub:001 dlvrd:001 submit date:2611231200 done date:2611231200 stat:DELIVRD err:000 text:`,
        });
      }, 20);
    }
  });
  session.on('error', () => {});
});
server.listen(0, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
