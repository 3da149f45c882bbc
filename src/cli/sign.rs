//! `hookwarden sign`: the headers a webhook sender would add to the body on stdin, one
//! `Name: value` per line, so a setup can be tested with curl:
//!
//! ```sh
//! hookwarden sign --provider github --secret "$SECRET" < body.json > headers.txt
//! curl -H @headers.txt --data-binary @body.json https://hooks.example.com/github
//! ```

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use http::HeaderName;

use hookwarden::config::{
    Algorithm, Encoding, HmacScheme, PROVIDERS, Provider, TemplatePart, parse_template,
};
use hookwarden::policy::guards::signature::{SignInput, sign};
use hookwarden::secret::Secret;

/// `hookwarden sign …`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// standard | svix | github | stripe | slack | shopify | twilio | hmac
    #[arg(long)]
    provider: String,
    /// The signing secret; repeat it to add one signature per secret where the scheme allows
    /// several (standard, svix, stripe, hmac). Prefer the environment variable: arguments are
    /// visible to other users of the machine.
    #[arg(
        long = "secret",
        env = "HOOKWARDEN_SIGN_SECRET",
        hide_env_values = true,
        required = true
    )]
    secrets: Vec<String>,
    /// Unix seconds to sign with; default: now.
    #[arg(long)]
    timestamp: Option<i64>,
    /// The message id (standard, svix, hmac with {id}); default: a random msg_… id.
    #[arg(long)]
    id: Option<String>,
    /// twilio: the full URL Twilio calls, with path and query (add bodySHA256=<hex sha256 of
    /// the body> to the query for a non-form body).
    #[arg(long)]
    url: Option<String>,
    /// hmac: the signature header.
    #[arg(long)]
    header: Option<String>,
    /// hmac: sha256 (default), sha512 or sha1.
    #[arg(long)]
    algorithm: Option<String>,
    /// hmac: hex (default) or base64.
    #[arg(long)]
    encoding: Option<String>,
    /// hmac: text before each signature, e.g. "sha256=".
    #[arg(long)]
    prefix: Option<String>,
    /// hmac: the signed content, e.g. "{timestamp}.{body}"; default "{body}".
    #[arg(long)]
    template: Option<String>,
    /// hmac: the header carrying the timestamp.
    #[arg(long)]
    timestamp_header: Option<String>,
    /// hmac: the header carrying the message id.
    #[arg(long)]
    id_header: Option<String>,
}

fn header_name(flag: &str, v: &str) -> anyhow::Result<HeaderName> {
    HeaderName::from_bytes(v.as_bytes())
        .map_err(|_| anyhow::anyhow!("{flag}: \"{v}\" is not a valid header name"))
}

impl SignArgs {
    fn hmac_scheme(&self) -> anyhow::Result<HmacScheme> {
        let Some(header) = &self.header else {
            bail!("--provider hmac needs --header, the header that carries the signature");
        };
        let template = match &self.template {
            None => vec![TemplatePart::Body],
            Some(t) => parse_template(t).map_err(|e| anyhow::anyhow!("--template: {e}"))?,
        };
        let timestamp_header = self
            .timestamp_header
            .as_deref()
            .map(|h| header_name("--timestamp-header", h))
            .transpose()?;
        let id_header = self
            .id_header
            .as_deref()
            .map(|h| header_name("--id-header", h))
            .transpose()?;
        if template.contains(&TemplatePart::Timestamp) != timestamp_header.is_some() {
            bail!("--template uses {{timestamp}} exactly when --timestamp-header is given");
        }
        if template.contains(&TemplatePart::Id) != id_header.is_some() {
            bail!("--template uses {{id}} exactly when --id-header is given");
        }
        Ok(HmacScheme {
            header: header_name("--header", header)?,
            algorithm: match self.algorithm.as_deref() {
                None | Some("sha256") => Algorithm::Sha256,
                Some("sha512") => Algorithm::Sha512,
                Some("sha1") => Algorithm::Sha1,
                Some(other) => bail!("--algorithm: \"{other}\" is not sha256, sha512 or sha1"),
            },
            encoding: match self.encoding.as_deref() {
                None | Some("hex") => Encoding::Hex,
                Some("base64") => Encoding::Base64,
                Some(other) => bail!("--encoding: \"{other}\" is not hex or base64"),
            },
            prefix: self.prefix.clone().unwrap_or_default(),
            template,
            timestamp_header,
            id_header,
        })
    }

    fn provider(&self) -> anyhow::Result<Provider> {
        Ok(match self.provider.as_str() {
            "standard" => Provider::Standard,
            "svix" => Provider::Svix,
            "github" => Provider::Github,
            "stripe" => Provider::Stripe,
            "slack" => Provider::Slack,
            "shopify" => Provider::Shopify,
            "twilio" => Provider::Twilio {
                public_url: String::new(),
            },
            "hmac" => Provider::Hmac(self.hmac_scheme()?),
            other => bail!("--provider: \"{other}\" is not one of {PROVIDERS}"),
        })
    }
}

/// Runs `sign`.
pub fn run(args: SignArgs) -> anyhow::Result<ExitCode> {
    let provider = args.provider()?;
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("cannot read the body from stdin")?;
    let id = match &args.id {
        Some(id) => id.clone(),
        None => {
            let mut b = [0u8; 12];
            getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
            format!("msg_{}", hex::encode(b))
        }
    };
    let secrets: Vec<Secret> = args
        .secrets
        .iter()
        .map(|s| Secret::new(s.as_str()))
        .collect();
    // Twilio signs the URL as it calls it, scheme included: one without would sign
    // something no request carries.
    if let Some(url) = args.url.as_deref()
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        bail!(
            "--url must be the full URL the provider calls, with https:// (e.g. https://hooks.example.com/twilio?x=1)"
        );
    }
    let input = SignInput {
        body: &body,
        timestamp: args
            .timestamp
            .unwrap_or_else(|| jiff::Timestamp::now().as_second()),
        id: &id,
        url: args.url.as_deref(),
    };
    for (name, value) in sign(&provider, &secrets, &input)? {
        println!("{name}: {value}");
    }
    Ok(ExitCode::SUCCESS)
}
