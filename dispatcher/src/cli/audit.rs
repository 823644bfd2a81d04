//! `otpd audit …`: check the audit trail, give one citizen's history, make a key.

use std::path::PathBuf;
use std::process::ExitCode;

use otpd::events::audit;
use otpd::secrets::audit_key::AuditKey;

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Check a trail file (or its directory, file after file): exits 0 when every
    /// record links to the one before and every checkpoint is signed by the key,
    /// 1 naming the first record that does not hold.
    Verify {
        /// A trail file, or the `[audit] path` directory.
        path: PathBuf,
        /// The public key (base64) the checkpoints must be signed with. Without it
        /// (and without --config) each file's own is used: that shows a file is
        /// whole, not that it is otpd's.
        #[arg(long)]
        public_key: Option<String>,
        /// Take the public key from this configuration's `[audit] signing_key`.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print, as JSON lines, every record about one subject (identity number).
    Export {
        #[arg(long)]
        subject: String,
        /// A trail file or directory (default: the configuration's `[audit] path`).
        #[arg(long)]
        path: Option<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Make a signing key: prints `signing_key` (for `[audit]`) and its public key
    /// (for `otpd audit verify --public-key`).
    Keygen,
}

pub fn run(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Keygen => match AuditKey::generate() {
            Ok((seed, public)) => {
                println!("signing_key = \"{seed}\"");
                println!("# public key: {public}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("otpd: no randomness for a key: {e}");
                ExitCode::FAILURE
            }
        },
        AuditCommand::Verify {
            path,
            public_key,
            config,
        } => {
            let public = match (public_key, config) {
                (Some(k), _) => Some(k),
                (None, Some(c)) => match crate::load(Some(&c)) {
                    Ok(s) => s.config.audit.signing_key.map(|k| k.public()),
                    Err(code) => return code,
                },
                (None, None) => None,
            };
            match audit::verify(&path, public.as_deref()) {
                Ok(files) => {
                    for (file, c) in &files {
                        println!(
                            "{}: intact, {} records, {} checkpoints, {} after the last checkpoint",
                            file.display(),
                            c.records,
                            c.checkpoints,
                            c.unsealed
                        );
                    }
                    if public.is_none() {
                        println!(
                            "(checked against each file's own key: give --public-key to know it is otpd's)"
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("otpd: the audit trail is broken: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        AuditCommand::Export {
            subject,
            path,
            config,
        } => {
            let path = match (path, config) {
                (Some(p), _) => p,
                (None, c) => match crate::load(c.as_ref()) {
                    Ok(s) => match s.config.audit.path {
                        Some(p) => p,
                        None => {
                            eprintln!("otpd: no [audit] path configured; give --path");
                            return ExitCode::from(2);
                        }
                    },
                    Err(code) => return code,
                },
            };
            let mut out = std::io::stdout().lock();
            match audit::export(&path, &subject, &mut out) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("otpd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
