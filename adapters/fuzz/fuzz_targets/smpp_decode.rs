//! Bytes from an SMSC, as otpd's session reads them: framing with the maximum PDU
//! length, decoding, and receipt extraction from any deliver_sm. "If we panic, we lose."
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use otpd_adapters::smpp::pdu::{self, MAX_PDU_LENGTH};
use rusmpp::Pdu;
use rusmpp::tokio_codec::CommandCodec;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = CommandCodec::new().with_max_length(MAX_PDU_LENGTH);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(command)) = codec.decode(&mut buf) {
        if let Some(Pdu::DeliverSm(deliver)) = command.pdu() {
            let _ = pdu::receipt_of(deliver);
        }
    }
});
