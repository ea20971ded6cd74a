//! E-mail to portal users (reset links, temporary passwords): over SMTP when `QUERY_SMTP_URL` is
//! set, else written as `.eml` files to the outbox folder (development: `deploy/local/up` prints
//! where it is).

use std::path::PathBuf;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, SinglePart};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("building the message: {0}")]
    Build(String),
    #[error("sending: {0}")]
    Send(String),
}

#[derive(Clone)]
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(PathBuf),
}

impl Mailer {
    pub fn new(smtp_url: Option<&str>, outbox: PathBuf) -> Result<Mailer, MailError> {
        match smtp_url {
            Some(url) => Ok(Mailer::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| MailError::Build(e.to_string()))?
                    .build(),
            )),
            None => Ok(Mailer::Outbox(outbox)),
        }
    }

    pub async fn send(
        &self,
        from: &str,
        to: &str,
        subject: &str,
        body: String,
    ) -> Result<(), MailError> {
        let message = Message::builder()
            .from(
                from.parse()
                    .map_err(|_| MailError::Build("from address".into()))?,
            )
            .to(to
                .parse()
                .map_err(|_| MailError::Build("to address".into()))?)
            .subject(subject);
        // Plain 7-bit text where it can be (links stay whole for any reader), else lettre's choice.
        let body = Body::new_with_encoding(body.clone(), ContentTransferEncoding::SevenBit)
            .unwrap_or_else(|_| Body::new(body));
        let message = message
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(body),
            )
            .map_err(|e| MailError::Build(e.to_string()))?;
        match self {
            Mailer::Smtp(t) => t
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| MailError::Send(e.to_string())),
            Mailer::Outbox(dir) => {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| MailError::Send(e.to_string()))?;
                AsyncFileTransport::<Tokio1Executor>::new(dir)
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| MailError::Send(e.to_string()))
            }
        }
    }
}
