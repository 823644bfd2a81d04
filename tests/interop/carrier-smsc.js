// An SMSC with real carriers' habits, built on the npm `smpp` package's server: the
// independent peer of otpd's carrier-habits test. Listens on 127.0.0.1 only and
// prints "listening PORT" once ready.
//
// - submit_sm_resp ids in zero-padded upper-case hexadecimal (`000000A01F`), receipt
//   ids in decimal, in the text form only (no receipted_message_id TLV);
// - every third receipt is sent before its submit_sm_resp;
// - every seventh submit is refused with ESME_RTHROTTLED (0x58);
// - every fifth receipted message is undeliverable (stat:UNDELIV err:034);
// - once, after CUT_AFTER submits, the session is cut with submits unanswered
//   (those get neither an answer nor a receipt);
// - like a real SMSC, a receipt whose session is gone is kept and goes out on another
//   receiving session, or on the next one to bind.
// Usage: node carrier-smsc.js [CUT_AFTER]
'use strict';
const smpp = require('smpp');

const cutAfter = parseInt(process.argv[2] || '40', 10);
let nextId = 40960; // 0xA000: every id holds a letter somewhere
let submits = 0;
let receipted = 0;
let cut = false;
const receivers = new Set(); // live sessions bound to take receipts
const backlog = []; // receipts that found no live session

function deliver(session, receiptPdu) {
  const target = receivers.has(session) ? session : receivers.values().next().value;
  if (target) {
    target.deliver_sm(receiptPdu);
  } else {
    backlog.push(receiptPdu);
  }
}

function receipt(session, pdu, id, undeliverable) {
  const stat = undeliverable ? 'UNDELIV' : 'DELIVRD';
  const err = undeliverable ? '034' : '000';
  deliver(session, {
    source_addr_ton: pdu.dest_addr_ton,
    source_addr_npi: pdu.dest_addr_npi,
    source_addr: pdu.destination_addr,
    dest_addr_ton: pdu.source_addr_ton,
    dest_addr_npi: pdu.source_addr_npi,
    destination_addr: pdu.source_addr,
    esm_class: 0x04,
    short_message: `id:${parseInt(id, 16)} sub:001 dlvrd:00${undeliverable ? 0 : 1} submit date:2611231200 done date:2611231200 stat:${stat} err:${err} text:`,
  });
}

const server = smpp.createServer((session) => {
  let held = []; // submits of this session still to answer
  const bound = (pdu) => session.send(pdu.response());
  const receiving = (pdu) => {
    bound(pdu);
    receivers.add(session);
    backlog.splice(0).forEach((r) => session.deliver_sm(r));
  };
  session.on('bind_transceiver', receiving);
  session.on('bind_transmitter', bound);
  session.on('bind_receiver', receiving);
  session.on('close', () => receivers.delete(session));
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => {
    session.send(pdu.response());
    session.close();
  });
  session.on('deliver_sm_resp', () => {});
  session.on('error', () => {});
  session.on('submit_sm', (pdu) => {
    submits++;
    if (!cut && submits > cutAfter) {
      // Hold this window's submits unanswered, then cut the link.
      held.push(pdu);
      if (held.length >= 3) {
        cut = true;
        receivers.delete(session);
        session.socket.destroy();
      }
      return;
    }
    if (submits % 7 === 0) {
      session.send(pdu.response({ command_status: 0x58 }));
      return;
    }
    const id = (nextId++).toString(16).toUpperCase().padStart(10, '0');
    const wantsReceipt = (pdu.registered_delivery & 0x01) !== 0;
    const n = ++receipted;
    const undeliverable = n % 5 === 0;
    if (wantsReceipt && n % 3 === 0) {
      // The receipt overtakes the answer.
      receipt(session, pdu, id, undeliverable);
      setTimeout(() => session.send(pdu.response({ message_id: id })), 30);
      return;
    }
    session.send(pdu.response({ message_id: id }));
    if (wantsReceipt) {
      setTimeout(() => receipt(session, pdu, id, undeliverable), 20);
    }
  });
});
server.listen(0, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
