//! `command_status`: its SMPP name, and what otpd does about it.
//!
//! The split follows SMPP 3.4 and common gateway practice (Kannel's temporary set):
//! throttling answers slow the bind down and the message waits; a few errors are
//! worth retrying; bind-level errors mean the session itself is wrong; everything
//! else fails the message for good, with the status name in its delivery history.

use std::fmt;

/// What a submit's `command_status` asks of the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// Accepted.
    Ok,
    /// The SMSC is saturated (`ESME_RTHROTTLED`, `ESME_RMSGQFUL`): slow this bind down
    /// and send the same message again later; it has not failed.
    SlowDown,
    /// A temporary fault on the SMSC side: retry, within limits.
    Transient,
    /// The bind is in the wrong state or its credentials are wrong: rebind or fix the
    /// configuration; the message itself is not at fault.
    Session,
    /// The message was refused (bad destination, bad parameters): retrying gives the
    /// same answer, on this carrier or another.
    Permanent,
}

/// An SMPP `command_status` value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandStatus(pub u32);

/// (value, name, class) for every status SMPP 3.4 names.
const KNOWN: &[(u32, &str, StatusClass)] = &[
    (0x00, "ESME_ROK", StatusClass::Ok),
    (0x01, "ESME_RINVMSGLEN", StatusClass::Permanent),
    (0x02, "ESME_RINVCMDLEN", StatusClass::Permanent),
    (0x03, "ESME_RINVCMDID", StatusClass::Permanent),
    (0x04, "ESME_RINVBNDSTS", StatusClass::Session),
    (0x05, "ESME_RALYBND", StatusClass::Session),
    (0x06, "ESME_RINVPRTFLG", StatusClass::Permanent),
    (0x07, "ESME_RINVREGDLVFLG", StatusClass::Permanent),
    (0x08, "ESME_RSYSERR", StatusClass::Transient),
    (0x0A, "ESME_RINVSRCADR", StatusClass::Permanent),
    (0x0B, "ESME_RINVDSTADR", StatusClass::Permanent),
    (0x0C, "ESME_RINVMSGID", StatusClass::Permanent),
    (0x0D, "ESME_RBINDFAIL", StatusClass::Session),
    (0x0E, "ESME_RINVPASWD", StatusClass::Session),
    (0x0F, "ESME_RINVSYSID", StatusClass::Session),
    (0x11, "ESME_RCANCELFAIL", StatusClass::Permanent),
    (0x13, "ESME_RREPLACEFAIL", StatusClass::Permanent),
    (0x14, "ESME_RMSGQFUL", StatusClass::SlowDown),
    (0x15, "ESME_RINVSERTYP", StatusClass::Permanent),
    (0x33, "ESME_RINVNUMDESTS", StatusClass::Permanent),
    (0x34, "ESME_RINVDLNAME", StatusClass::Permanent),
    (0x40, "ESME_RINVDESTFLAG", StatusClass::Permanent),
    (0x42, "ESME_RINVSUBREP", StatusClass::Permanent),
    (0x43, "ESME_RINVESMCLASS", StatusClass::Permanent),
    (0x44, "ESME_RCNTSUBDL", StatusClass::Permanent),
    (0x45, "ESME_RSUBMITFAIL", StatusClass::Permanent),
    (0x48, "ESME_RINVSRCTON", StatusClass::Permanent),
    (0x49, "ESME_RINVSRCNPI", StatusClass::Permanent),
    (0x50, "ESME_RINVDSTTON", StatusClass::Permanent),
    (0x51, "ESME_RINVDSTNPI", StatusClass::Permanent),
    (0x53, "ESME_RINVSYSTYP", StatusClass::Session),
    (0x54, "ESME_RINVREPFLAG", StatusClass::Permanent),
    (0x55, "ESME_RINVNUMMSGS", StatusClass::Permanent),
    (0x58, "ESME_RTHROTTLED", StatusClass::SlowDown),
    (0x61, "ESME_RINVSCHED", StatusClass::Permanent),
    (0x62, "ESME_RINVEXPIRY", StatusClass::Permanent),
    (0x63, "ESME_RINVDFTMSGID", StatusClass::Permanent),
    (0x64, "ESME_RX_T_APPN", StatusClass::Transient),
    (0x65, "ESME_RX_P_APPN", StatusClass::Permanent),
    (0x66, "ESME_RX_R_APPN", StatusClass::Permanent),
    (0x67, "ESME_RQUERYFAIL", StatusClass::Permanent),
    (0xC0, "ESME_RINVOPTPARSTREAM", StatusClass::Permanent),
    (0xC1, "ESME_ROPTPARNOTALLWD", StatusClass::Permanent),
    (0xC2, "ESME_RINVPARLEN", StatusClass::Permanent),
    (0xC3, "ESME_RMISSINGOPTPARAM", StatusClass::Permanent),
    (0xC4, "ESME_RINVOPTPARAMVAL", StatusClass::Permanent),
    (0xFE, "ESME_RDELIVERYFAILURE", StatusClass::Permanent),
    // An unknown error says nothing about the message: retry, capped by the caller.
    (0xFF, "ESME_RUNKNOWNERR", StatusClass::Transient),
];

impl CommandStatus {
    pub const OK: CommandStatus = CommandStatus(0);
    pub const THROTTLED: CommandStatus = CommandStatus(0x58);
    pub const MSG_QUEUE_FULL: CommandStatus = CommandStatus(0x14);
    pub const INVALID_DEST_ADDR: CommandStatus = CommandStatus(0x0B);
    pub const SYSTEM_ERROR: CommandStatus = CommandStatus(0x08);

    /// Whether the SMSC refused the destination address itself (`ESME_RINVDSTADR`,
    /// `ESME_RINVDSTTON`, `ESME_RINVDSTNPI`): a fault of the number, not of the carrier,
    /// so routing does not try it elsewhere.
    pub fn is_destination_error(self) -> bool {
        matches!(self.0, 0x0B | 0x50 | 0x51)
    }

    fn known(self) -> Option<&'static (u32, &'static str, StatusClass)> {
        KNOWN
            .binary_search_by_key(&self.0, |(v, _, _)| *v)
            .ok()
            .map(|i| &KNOWN[i])
    }

    /// The SMPP name (`ESME_RTHROTTLED`), or `None` for values SMPP 3.4 does not name
    /// (reserved or vendor-specific).
    pub fn name(self) -> Option<&'static str> {
        self.known().map(|(_, name, _)| *name)
    }

    pub fn class(self) -> StatusClass {
        match self.known() {
            Some((_, _, class)) => *class,
            // Vendor-specific (0x400–0x4FF) and reserved values: the SMSC refused the
            // message for a reason of its own. Failing it (and letting routing try
            // another carrier) is safer than resubmitting blindly.
            None => StatusClass::Permanent,
        }
    }
}

impl fmt::Display for CommandStatus {
    /// The name when SMPP has one, else the value: `ESME_RINVDSTADR`, `0x00000401`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "0x{:08X}", self.0),
        }
    }
}

impl fmt::Debug for CommandStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandStatus({self} = 0x{:08X})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_for_binary_search_and_names_are_unique() {
        assert!(KNOWN.windows(2).all(|w| w[0].0 < w[1].0));
        let names: std::collections::HashSet<_> = KNOWN.iter().map(|(_, n, _)| n).collect();
        assert_eq!(names.len(), KNOWN.len());
        assert!(KNOWN.iter().all(|(_, n, _)| n.starts_with("ESME_R")));
    }

    #[test]
    fn throttling_slows_down_and_does_not_fail() {
        assert_eq!(CommandStatus::THROTTLED.class(), StatusClass::SlowDown);
        assert_eq!(CommandStatus::MSG_QUEUE_FULL.class(), StatusClass::SlowDown);
    }

    #[test]
    fn classes_of_the_statuses_that_matter() {
        assert_eq!(CommandStatus::OK.class(), StatusClass::Ok);
        assert_eq!(CommandStatus::SYSTEM_ERROR.class(), StatusClass::Transient);
        assert_eq!(CommandStatus(0x64).class(), StatusClass::Transient);
        assert_eq!(
            CommandStatus::INVALID_DEST_ADDR.class(),
            StatusClass::Permanent
        );
        assert_eq!(CommandStatus(0x0E).class(), StatusClass::Session);
        assert_eq!(CommandStatus(0x04).class(), StatusClass::Session);
        assert_eq!(CommandStatus(0x401).class(), StatusClass::Permanent);
    }

    #[test]
    fn display_uses_the_name_or_the_value() {
        assert_eq!(
            CommandStatus::INVALID_DEST_ADDR.to_string(),
            "ESME_RINVDSTADR"
        );
        assert_eq!(CommandStatus(0x401).to_string(), "0x00000401");
        assert_eq!(CommandStatus(0x401).name(), None);
    }
}
