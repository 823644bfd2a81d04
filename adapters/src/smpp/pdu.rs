//! The PDUs otpd builds and reads, on top of the `rusmpp` codec.
//!
//! rusmpp encodes and decodes every SMPP PDU; this module pins down how otpd fills
//! them — which fields it sets explicitly because rusmpp's defaults are SMPP 5.0's or
//! surprising (`EsmClass::default()` encodes as 0x08, not the 0x00 a plain submit
//! needs) — and how a `deliver_sm` becomes a [`Receipt`]. Framing uses rusmpp's
//! `CommandCodec` with a maximum PDU length, so a peer cannot make us buffer without
//! bound.

use rusmpp::pdus::{DataSm, DeliverSm, SubmitSm};
use rusmpp::tlvs::{MessageDeliveryRequestTlvValue, MessageSubmissionRequestTlvValue, TlvValue};
use rusmpp::types::{AnyOctetString, COctetString, EmptyOrFullCOctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, MessagePayload, Npi, RegisteredDelivery, Ton};

use super::receipt::{self, Receipt, ReceiptError};

/// Largest PDU otpd accepts from a peer. A submit_sm with a full 64 KiB
/// message_payload is the largest thing SMPP 3.4 can legitimately carry.
pub const MAX_PDU_LENGTH: usize = 16 + 65_536 + 1024;

/// Largest short_message; longer bodies go in the message_payload TLV.
pub const MAX_SHORT_MESSAGE: usize = 254;

/// An SMPP address: type of number, numbering plan, digits or alphanumeric sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub ton: u8,
    pub npi: u8,
    pub addr: String,
}

impl Address {
    /// An international number (TON 1, NPI 1), written without the `+`.
    pub fn international(e164: &str) -> Self {
        Self {
            ton: 1,
            npi: 1,
            addr: e164.trim_start_matches('+').to_string(),
        }
    }
}

/// What otpd's SMS needs from a submit_sm beyond the addresses and text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmitOptions {
    /// The data_coding byte matching how `body` was encoded (0x00 GSM 7-bit, 0x03
    /// Latin-1, 0x08 UCS-2, …).
    pub data_coding: u8,
    /// registered_delivery: 0x01 asks for a receipt on success or failure.
    pub registered_delivery: u8,
    /// esm_class: 0x00, or 0x40 when `body` starts with a user data header.
    pub esm_class: u8,
    /// How long the SMSC may keep trying (SMPP time format); `None` leaves the
    /// SMSC's default.
    pub validity_period: Option<ValidityPeriod>,
}

/// A `validity_period` value: 16 ASCII characters in SMPP 3.4's time format
/// ([`super::validity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidityPeriod([u8; 16]);

impl ValidityPeriod {
    /// `None` unless `value` is 16 ASCII characters.
    pub fn new(value: &str) -> Option<Self> {
        let bytes: [u8; 16] = value.as_bytes().try_into().ok()?;
        bytes.is_ascii().then_some(Self(bytes))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PduError {
    #[error("{field} is longer than SMPP allows ({max} characters)")]
    TooLong { field: &'static str, max: usize },
    #[error("the message body is longer than a message_payload can carry (65535 octets)")]
    BodyTooLong,
}

/// A NUL-terminated SMPP string, refused (not truncated) when too long.
pub fn c_string<const MIN: usize, const MAX: usize>(
    field: &'static str,
    value: &str,
) -> Result<COctetString<MIN, MAX>, PduError> {
    let mut bytes = value.as_bytes().to_vec();
    bytes.push(0);
    COctetString::from_vec(bytes).map_err(|_| PduError::TooLong {
        field,
        max: MAX - 1,
    })
}

/// A submit_sm for `body`: short_message when it fits, else message_payload.
pub fn submit_sm(
    source: &Address,
    destination: &Address,
    body: &[u8],
    options: SubmitOptions,
) -> Result<SubmitSm, PduError> {
    let builder = SubmitSm::builder()
        .source_addr_ton(Ton::from(source.ton))
        .source_addr_npi(Npi::from(source.npi))
        .source_addr(c_string("source_addr", &source.addr)?)
        .dest_addr_ton(Ton::from(destination.ton))
        .dest_addr_npi(Npi::from(destination.npi))
        .destination_addr(c_string("destination_addr", &destination.addr)?)
        .esm_class(EsmClass::from(options.esm_class))
        .registered_delivery(RegisteredDelivery::from(options.registered_delivery))
        .data_coding(DataCoding::from(options.data_coding))
        .validity_period(options.validity_period.map_or_else(
            EmptyOrFullCOctetString::empty,
            |v| {
                EmptyOrFullCOctetString::from_string(v.as_str().to_string())
                    .expect("16 ASCII characters")
            },
        ));
    let submit = if body.len() <= MAX_SHORT_MESSAGE {
        builder
            .short_message(OctetString::from_slice(body).expect("at most 254 octets"))
            .build()
    } else if body.len() <= usize::from(u16::MAX) {
        builder
            .push_tlv(MessageSubmissionRequestTlvValue::MessagePayload(
                MessagePayload::new(AnyOctetString::from_slice(body)),
            ))
            .build()
    } else {
        return Err(PduError::BodyTooLong);
    };
    Ok(submit)
}

/// `Some` when the deliver_sm is a delivery receipt (esm_class message type 0x04),
/// with the receipt read from its TLVs and text; `None` for a mobile-originated
/// message or another kind of acknowledgement.
pub fn receipt_of(deliver: &DeliverSm) -> Option<Result<Receipt, ReceiptError>> {
    receipt_from(
        u8::from(deliver.esm_class),
        deliver.short_message().as_ref(),
        deliver.tlvs(),
    )
}

/// The same for a data_sm, which some SMSCs use for receipts (TLVs only, or a
/// receipt text in message_payload).
pub fn receipt_of_data_sm(data: &DataSm) -> Option<Result<Receipt, ReceiptError>> {
    receipt_from(u8::from(data.esm_class), &[], data.tlvs())
}

fn receipt_from(
    esm_class: u8,
    short_message: &[u8],
    tlvs: &[rusmpp::tlvs::Tlv],
) -> Option<Result<Receipt, ReceiptError>> {
    if esm_class & 0x3C != 0x04 {
        return None;
    }
    let mut receipted_id = None;
    let mut state = None;
    let mut network_error = None;
    let mut payload = None;
    for tlv in tlvs {
        match tlv.value() {
            Some(TlvValue::ReceiptedMessageId(id)) => receipted_id = Some(id.as_str()),
            Some(TlvValue::MessageState(s)) => state = Some(u8::from(*s)),
            Some(TlvValue::NetworkErrorCode(e)) => {
                network_error = Some((u8::from(e.network_type), e.error_code))
            }
            Some(TlvValue::MessagePayload(p)) => payload = Some(p.value.as_ref()),
            _ => {}
        }
    }
    // Receipt texts are ASCII in practice; anything else is read leniently.
    let body = if short_message.is_empty() {
        payload.unwrap_or(short_message)
    } else {
        short_message
    };
    let text = String::from_utf8_lossy(body);
    Some(receipt::reconcile(
        (!text.trim().is_empty()).then_some(&*text),
        receipted_id,
        state,
        network_error,
    ))
}

/// A receipt deliver_sm as an SMSC sends it (for the simulator and tests). The text is
/// cut at 254 octets, as SMSCs do.
pub fn receipt_deliver_sm(
    from: &Address,
    to: &Address,
    text: &str,
    tlvs: Vec<MessageDeliveryRequestTlvValue>,
) -> Result<DeliverSm, PduError> {
    Ok(DeliverSm::builder()
        .source_addr_ton(Ton::from(from.ton))
        .source_addr_npi(Npi::from(from.npi))
        .source_addr(c_string("source_addr", &from.addr)?)
        .dest_addr_ton(Ton::from(to.ton))
        .dest_addr_npi(Npi::from(to.npi))
        .destination_addr(c_string("destination_addr", &to.addr)?)
        .esm_class(EsmClass::from(0x04))
        .data_coding(DataCoding::from(0x00))
        .short_message(
            OctetString::from_slice(&text.as_bytes()[..text.len().min(MAX_SHORT_MESSAGE)])
                .expect("at most 254 octets"),
        )
        .tlvs(tlvs)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smpp::receipt::MessageState;
    use bytes::BytesMut;
    use proptest::prelude::*;
    use rusmpp::tokio_codec::CommandCodec;
    use rusmpp::values::{ErrorCodeNetworkType, NetworkErrorCode};
    use rusmpp::{Command, CommandStatus, Pdu};
    use tokio_util::codec::{Decoder, Encoder};

    fn codec() -> CommandCodec {
        CommandCodec::new().with_max_length(MAX_PDU_LENGTH)
    }

    fn encode(command: Command) -> BytesMut {
        let mut buf = BytesMut::new();
        codec().encode(command, &mut buf).unwrap();
        buf
    }

    fn decode(buf: &mut BytesMut) -> Command {
        codec().decode(buf).unwrap().expect("a whole PDU")
    }

    fn plain() -> SubmitOptions {
        SubmitOptions {
            data_coding: 0x00,
            registered_delivery: 0x01,
            esm_class: 0x00,
            validity_period: None,
        }
    }

    #[test]
    fn submit_sm_round_trips_with_the_fields_otpd_sets() {
        let source = Address {
            ton: 5,
            npi: 0,
            addr: "Clave".into(),
        };
        let submit = submit_sm(
            &source,
            &Address::international("+34600123456"),
            b"123456 es tu codigo",
            plain(),
        )
        .unwrap();
        let command = Command::new(CommandStatus::EsmeRok, 7, submit.clone());
        let mut bytes = encode(command.clone());
        // Header: length, id 0x00000004, status 0, sequence 7.
        assert_eq!(&bytes[4..16], &[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 7]);
        // Body: service_type "", source 5/0 "Clave", dest 1/1 digits, then esm_class.
        let body = &bytes[16..];
        let esm_at = 1 + 2 + "Clave".len() + 1 + 2 + "34600123456".len() + 1;
        assert_eq!(&body[..4], &[0, 5, 0, b'C']);
        assert_eq!(
            body[esm_at], 0x00,
            "esm_class must be 0x00, not rusmpp's default 0x08"
        );
        assert_eq!(decode(&mut bytes), command);
        assert!(bytes.is_empty());
    }

    #[test]
    fn long_bodies_go_in_message_payload() {
        let body = vec![b'a'; 600];
        let submit = submit_sm(
            &Address::international("+1"),
            &Address::international("+34600123456"),
            &body,
            plain(),
        )
        .unwrap();
        assert!(submit.short_message().as_ref().is_empty());
        let command = Command::new(CommandStatus::EsmeRok, 1, submit);
        let mut bytes = encode(command.clone());
        assert_eq!(decode(&mut bytes), command);
        assert_eq!(
            submit_sm(
                &Address::international("+1"),
                &Address::international("+2"),
                &vec![0; 70_000],
                plain()
            ),
            Err(PduError::BodyTooLong)
        );
    }

    #[test]
    fn oversized_addresses_are_refused_not_truncated() {
        let long = Address {
            ton: 5,
            npi: 0,
            addr: "x".repeat(21),
        };
        let err = submit_sm(
            &long,
            &Address::international("+34600123456"),
            b"x",
            plain(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            PduError::TooLong {
                field: "source_addr",
                max: 20
            }
        );
    }

    #[test]
    fn receipts_are_read_from_text_and_tlvs() {
        let smsc = Address::international("+34600123456");
        let us = Address {
            ton: 5,
            npi: 0,
            addr: "Clave".into(),
        };
        let text = "id:1A2B sub:001 dlvrd:001 submit date:2611231200 done date:2611231201 stat:DELIVRD err:000 text:123456";
        let deliver = receipt_deliver_sm(&smsc, &us, text, vec![]).unwrap();
        // Through the wire and back, as a session would see it.
        let mut bytes = encode(Command::new(CommandStatus::EsmeRok, 3, deliver));
        let Some(Pdu::DeliverSm(deliver)) = decode(&mut bytes).pdu().cloned() else {
            panic!("a deliver_sm");
        };
        let r = receipt_of(&deliver).unwrap().unwrap();
        assert_eq!(r.message_id, "1A2B");
        assert_eq!(r.state, MessageState::Delivered);
        assert_eq!(r.error, None);

        let tlvs = vec![
            MessageDeliveryRequestTlvValue::ReceiptedMessageId(c_string("id", "6699").unwrap()),
            MessageDeliveryRequestTlvValue::MessageState(rusmpp::values::MessageState::from(5u8)),
            MessageDeliveryRequestTlvValue::NetworkErrorCode(NetworkErrorCode::new(
                ErrorCodeNetworkType::Gsm,
                34,
            )),
        ];
        let deliver = receipt_deliver_sm(&smsc, &us, text, tlvs).unwrap();
        let mut bytes = encode(Command::new(CommandStatus::EsmeRok, 4, deliver));
        let Some(Pdu::DeliverSm(deliver)) = decode(&mut bytes).pdu().cloned() else {
            panic!("a deliver_sm");
        };
        let r = receipt_of(&deliver).unwrap().unwrap();
        assert_eq!(r.message_id, "6699", "the TLV wins");
        assert_eq!(r.state, MessageState::Undeliverable);
        assert_eq!(r.error.as_deref(), Some("3:34"));
    }

    #[test]
    fn a_data_sm_receipt_is_read_from_its_tlvs() {
        // data_sm as an SMSC sends it, byte by byte: empty service_type, addresses
        // 1/1 "", esm_class 0x04, then receipted_message_id "ABC" and message_state 2.
        let body: &[u8] = &[
            0, 1, 1, 0, 1, 1, 0, 0x04, 0, 0, //
            0x00, 0x1E, 0x00, 0x04, b'A', b'B', b'C', 0, //
            0x04, 0x27, 0x00, 0x01, 0x02,
        ];
        let mut bytes = BytesMut::new();
        bytes.extend_from_slice(&((16 + body.len()) as u32).to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0x01, 0x03, 0, 0, 0, 0, 0, 0, 0, 5]);
        bytes.extend_from_slice(body);
        let Some(Pdu::DataSm(data)) = decode(&mut bytes).pdu().cloned() else {
            panic!("a data_sm");
        };
        let r = receipt_of_data_sm(&data).unwrap().unwrap();
        assert_eq!(
            (r.message_id.as_str(), r.state),
            ("ABC", MessageState::Delivered)
        );
        let plain = DataSm::builder().esm_class(EsmClass::from(0x00)).build();
        assert!(receipt_of_data_sm(&plain).is_none());
    }

    #[test]
    fn a_mobile_originated_message_is_not_a_receipt() {
        let mut deliver = receipt_deliver_sm(
            &Address::international("+34600123456"),
            &Address::international("+1"),
            "hola",
            vec![],
        )
        .unwrap();
        deliver.esm_class = EsmClass::from(0x00);
        assert!(receipt_of(&deliver).is_none());
    }

    #[test]
    fn pdus_over_the_maximum_length_are_refused_before_buffering() {
        let mut bytes =
            BytesMut::from(&[0x00u8, 0x10, 0x00, 0x00, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1][..]);
        let err = CommandCodec::new().with_max_length(1024).decode(&mut bytes);
        assert!(err.is_err(), "a 1 MiB command_length must be refused");
    }

    #[test]
    fn a_partial_pdu_waits_for_more_bytes() {
        let submit = submit_sm(
            &Address::international("+1"),
            &Address::international("+34600123456"),
            b"x",
            plain(),
        )
        .unwrap();
        let whole = encode(Command::new(CommandStatus::EsmeRok, 9, submit));
        let mut partial = BytesMut::from(&whole[..whole.len() - 1]);
        let mut c = codec();
        assert!(c.decode(&mut partial).unwrap().is_none());
        partial.extend_from_slice(&whole[whole.len() - 1..]);
        assert!(c.decode(&mut partial).unwrap().is_some());
    }

    /// Every PDU otpd sends or receives, through the codec and back, field by field,
    /// with the sequence number and status it carried.
    #[test]
    fn every_pdu_otpd_exchanges_round_trips() {
        use rusmpp::pdus::*;
        use rusmpp::values::InterfaceVersion;
        let sid = || c_string::<1, 16>("id", "otpd").unwrap();
        let pw = || c_string::<1, 9>("pw", "secret").unwrap();
        let mid = || c_string::<1, 65>("mid", "0A1B2C").unwrap();
        let bind = |b: &str| match b {
            "trx" => Pdu::from(
                BindTransceiver::builder()
                    .system_id(sid())
                    .password(pw())
                    .interface_version(InterfaceVersion::Smpp3_4)
                    .build(),
            ),
            "tx" => Pdu::from(
                BindTransmitter::builder()
                    .system_id(sid())
                    .password(pw())
                    .interface_version(InterfaceVersion::Smpp3_4)
                    .build(),
            ),
            _ => Pdu::from(
                BindReceiver::builder()
                    .system_id(sid())
                    .password(pw())
                    .interface_version(InterfaceVersion::Smpp3_4)
                    .build(),
            ),
        };
        let submit = submit_sm(
            &Address::international("+1"),
            &Address::international("+34600123456"),
            b"x",
            plain(),
        )
        .unwrap();
        let deliver = receipt_deliver_sm(
            &Address::international("+34600123456"),
            &Address::international("+1"),
            "id:1 stat:DELIVRD",
            vec![],
        )
        .unwrap();
        let pdus: Vec<(CommandStatus, Pdu)> = vec![
            (CommandStatus::EsmeRok, bind("trx")),
            (CommandStatus::EsmeRok, bind("tx")),
            (CommandStatus::EsmeRok, bind("rx")),
            (
                CommandStatus::EsmeRok,
                BindTransceiverResp::builder()
                    .system_id(sid())
                    .build()
                    .into(),
            ),
            (
                CommandStatus::EsmeRinvpaswd,
                BindTransmitterResp::builder()
                    .system_id(sid())
                    .build()
                    .into(),
            ),
            (
                CommandStatus::EsmeRok,
                BindReceiverResp::builder().system_id(sid()).build().into(),
            ),
            (CommandStatus::EsmeRok, Pdu::Unbind),
            (CommandStatus::EsmeRok, Pdu::UnbindResp),
            (CommandStatus::EsmeRok, Pdu::EnquireLink),
            (CommandStatus::EsmeRok, Pdu::EnquireLinkResp),
            (CommandStatus::EsmeRinvcmdid, Pdu::GenericNack),
            (CommandStatus::EsmeRok, submit.into()),
            (
                CommandStatus::EsmeRok,
                SubmitSmResp::builder().message_id(mid()).build().into(),
            ),
            (
                CommandStatus::EsmeRthrottled,
                SubmitSmResp::builder().build().into(),
            ),
            (CommandStatus::EsmeRok, deliver.into()),
            (CommandStatus::EsmeRok, DeliverSmResp::default().into()),
            (
                CommandStatus::EsmeRok,
                DataSm::builder()
                    .esm_class(EsmClass::from(0x04))
                    .build()
                    .into(),
            ),
            (
                CommandStatus::EsmeRok,
                DataSmResp::builder().message_id(mid()).build().into(),
            ),
            (
                CommandStatus::EsmeRok,
                QuerySm::builder().message_id(mid()).build().into(),
            ),
            (
                CommandStatus::EsmeRok,
                QuerySmResp::builder()
                    .message_id(mid())
                    .error_code(3)
                    .build()
                    .into(),
            ),
            (
                CommandStatus::EsmeRok,
                Outbind::builder()
                    .system_id(sid())
                    .password(pw())
                    .build()
                    .into(),
            ),
            (
                CommandStatus::EsmeRok,
                AlertNotification::builder().build().into(),
            ),
        ];
        for (seq, (status, pdu)) in pdus.into_iter().enumerate() {
            let command = Command::new(status, seq as u32 + 1, pdu);
            let mut bytes = encode(command.clone());
            assert_eq!(decode(&mut bytes), command, "{command:?}");
            assert!(bytes.is_empty());
        }
    }

    proptest! {
        /// Whatever a peer sends, decoding answers with a PDU, "need more", or an
        /// error — never a panic.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let mut c = codec();
            for _ in 0..8 {
                match c.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }

        /// A PDU with a plausible header and a random body decodes or fails cleanly.
        #[test]
        fn random_bodies_behind_valid_headers(id in prop_oneof![Just(4u32), Just(5), Just(0x80000004), Just(9), Just(0x103)], body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut bytes = BytesMut::new();
            bytes.extend_from_slice(&((16 + body.len()) as u32).to_be_bytes());
            bytes.extend_from_slice(&id.to_be_bytes());
            bytes.extend_from_slice(&0u32.to_be_bytes());
            bytes.extend_from_slice(&1u32.to_be_bytes());
            bytes.extend_from_slice(&body);
            let _ = codec().decode(&mut bytes);
        }

        #[test]
        fn submit_sm_round_trips(addr in "[0-9]{7,15}", body in proptest::collection::vec(any::<u8>(), 0..1000), dc in prop_oneof![Just(0u8), Just(3), Just(8)], seq in 1u32..0x7FFF_FFFF) {
            let submit = submit_sm(&Address { ton: 5, npi: 0, addr: "otpd".into() }, &Address::international(&addr), &body, SubmitOptions { data_coding: dc, registered_delivery: 1, esm_class: 0, validity_period: None }).unwrap();
            let command = Command::new(CommandStatus::EsmeRok, seq, submit);
            let mut bytes = encode(command.clone());
            prop_assert_eq!(decode(&mut bytes), command);
        }
    }
}
